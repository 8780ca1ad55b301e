// A WebSocket-over-HTTP/2 client for tests (RFC 8441): Node's node:http2 in a child process,
// driven by JSON lines. It opens extended CONNECT streams once the server's SETTINGS allow them,
// writes masked WebSocket frames it encodes itself, parses the server's frames, and reports each
// event (the answer's head, messages, closes, END_STREAM, resets) as a line.

/** What the Node client reports. `id` names the stream the test chose. */
export interface H2WsEvent {
  ev: string;
  id?: number;
  [k: string]: unknown;
}

/** The Node script: commands on stdin, events on stdout. */
const SCRIPT = String.raw`
const http2 = require("node:http2");
const fs = require("node:fs");
const crypto = require("node:crypto");
const readline = require("node:readline");
const out = (o) => process.stdout.write(JSON.stringify(o) + "\n");
const [url, ca] = process.argv.slice(1);
const session = http2.connect(url, ca ? { ca: fs.readFileSync(ca), servername: "localhost" } : {});
session.on("error", (e) => out({ ev: "session_error", message: String(e) }));
session.on("goaway", (code) => out({ ev: "goaway", code }));
session.on("remoteSettings", (s) => out({ ev: "settings", enableConnectProtocol: !!s.enableConnectProtocol }));
const streams = new Map();
function frame(op, payload, more) {
  const len = payload.length;
  const ext = len < 126 ? 0 : len < 65536 ? 2 : 8;
  const head = Buffer.alloc(2 + ext + 4);
  head[0] = (more ? 0 : 0x80) | op;
  head[1] = 0x80 | (ext === 0 ? len : ext === 2 ? 126 : 127);
  if (ext === 2) head.writeUInt16BE(len, 2);
  if (ext === 8) head.writeBigUInt64BE(BigInt(len), 2);
  const mask = crypto.randomBytes(4);
  mask.copy(head, 2 + ext);
  const body = Buffer.from(payload);
  for (let i = 0; i < len; i++) body[i] ^= mask[i & 3];
  return Buffer.concat([head, body]);
}
function parser(id) {
  let buf = Buffer.alloc(0);
  let parts = [], msgOp = 0;
  return (chunk) => {
    buf = Buffer.concat([buf, chunk]);
    for (;;) {
      if (buf.length < 2) return;
      const fin = (buf[0] & 0x80) !== 0, op = buf[0] & 0x0f, masked = (buf[1] & 0x80) !== 0;
      let len = buf[1] & 0x7f, at = 2;
      if (len === 126) { if (buf.length < 4) return; len = buf.readUInt16BE(2); at = 4; }
      else if (len === 127) { if (buf.length < 10) return; len = Number(buf.readBigUInt64BE(2)); at = 10; }
      if (buf.length < at + len) return;
      const payload = buf.subarray(at, at + len);
      buf = buf.subarray(at + len);
      if (masked || (buf[0] & 0x70)) out({ ev: "bad_frame", id });
      if (op === 8) {
        out({ ev: "close", id, code: len >= 2 ? payload.readUInt16BE(0) : 1005, reason: payload.subarray(2).toString() });
      } else if (op === 9) out({ ev: "ping", id });
      else if (op === 10) out({ ev: "pong", id });
      else {
        if (op !== 0) msgOp = op;
        parts.push(Buffer.from(payload));
        out({ ev: "frame", id, size: len, fin });
        if (fin) {
          const all = Buffer.concat(parts);
          parts = [];
          out(msgOp === 1 ? { ev: "text", id, data: all.toString() } : { ev: "binary", id, size: all.length, sha: crypto.createHash("sha256").update(all).digest("hex") });
        }
      }
    }
  };
}
readline.createInterface({ input: process.stdin }).on("line", (line) => {
  const c = JSON.parse(line);
  const s = streams.get(c.id);
  switch (c.op) {
    case "open": {
      const req = session.request({
        ":method": c.method ?? "CONNECT",
        ...(c.protocol === null ? {} : { ":protocol": c.protocol ?? "websocket" }),
        ...(c.protocol === null ? {} : {
          ":path": c.path ?? "/",
          ":scheme": c.scheme ?? (url.startsWith("https") ? "https" : "http"),
        }),
        ":authority": c.authority ?? "localhost",
        "sec-websocket-version": "13",
        ...(c.headers ?? {}),
      }, { endStream: false });
      streams.set(c.id, req);
      if (c.paused) req.pause();
      req.on("response", (h) => {
        const headers = {};
        for (const [k, v] of Object.entries(h)) if (!k.startsWith(":")) headers[k] = String(v);
        out({ ev: "response", id: c.id, status: h[":status"], headers });
      });
      const feed = parser(c.id);
      let body = "";
      req.on("data", (d) => { feed(d); if (body.length < 4096) body += d.toString("latin1"); });
      req.on("end", () => out({ ev: "end", id: c.id, body: body.slice(0, 200) }));
      req.on("close", () => out({ ev: "stream_close", id: c.id, rstCode: req.rstCode }));
      req.on("error", (e) => out({ ev: "stream_error", id: c.id, message: String(e) }));
      break;
    }
    case "text": s.write(frame(1, Buffer.from(c.data))); break;
    case "binary": {
      const data = Buffer.alloc(c.size);
      for (let i = 0; i < c.size; i++) data[i] = (i * 7 + (i >> 10)) & 0xff;
      out({ ev: "sent", id: c.id, sha: crypto.createHash("sha256").update(data).digest("hex") });
      s.write(frame(2, data));
      break;
    }
    case "raw": s.write(Buffer.from(c.b64, "base64")); break;
    case "ping": s.write(frame(9, Buffer.from(c.data ?? ""))); break;
    case "close": {
      const r = Buffer.from(c.reason ?? "");
      const p = Buffer.alloc(2 + r.length);
      p.writeUInt16BE(c.code, 0);
      r.copy(p, 2);
      s.write(frame(8, c.code === undefined ? Buffer.alloc(0) : p));
      break;
    }
    case "end": s.end(); break;
    case "reset": s.close(http2.constants.NGHTTP2_CANCEL); break;
    case "pause": s.pause(); break;
    case "resume": s.resume(); break;
    case "get": {
      const r = session.request({ ":path": c.path, ":authority": "localhost" });
      let body = "";
      let status = 0;
      r.on("response", (h) => status = h[":status"]);
      r.on("data", (d) => body += d);
      r.on("end", () => out({ ev: "get", id: c.id, status, body }));
      r.end();
      break;
    }
    case "quit": session.close(() => process.exit(0)); break;
  }
});
out({ ev: "started" });
`;

/** A running Node http2 client; dispose to stop it. */
export interface H2WsClient extends AsyncDisposable {
  send(cmd: Record<string, unknown>): void;
  /** Waits for the first event not taken yet that `match` accepts. */
  next(match: (e: H2WsEvent) => boolean, timeoutMs?: number): Promise<H2WsEvent>;
  /** Every event so far. */
  events: H2WsEvent[];
}

/** Starts the client against `url` (https with the test CA `ca`, or http for h2c). */
export async function h2wsClient(url: string, ca?: string): Promise<H2WsClient> {
  const child = new Deno.Command("node", {
    args: ["-e", SCRIPT, url, ca ?? ""],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const writer = child.stdin.getWriter();
  const events: H2WsEvent[] = [];
  const waiters = new Set<() => void>();
  let ended = false;
  const pump = (async () => {
    let buf = "";
    for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
      buf += chunk;
      for (let i = buf.indexOf("\n"); i >= 0; i = buf.indexOf("\n")) {
        events.push(JSON.parse(buf.slice(0, i)));
        buf = buf.slice(i + 1);
      }
      for (const w of waiters) w();
    }
    ended = true;
    for (const w of waiters) w();
  })();
  const used = new Set<number>();
  const client: H2WsClient = {
    events,
    send(cmd) {
      void writer.write(new TextEncoder().encode(JSON.stringify(cmd) + "\n"));
    },
    async next(match, timeoutMs = 10_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        for (let i = 0; i < events.length; i++) {
          if (!used.has(i) && match(events[i])) {
            // Each event is taken by one wait.
            used.add(i);
            return events[i];
          }
        }
        if (ended) throw new Error(`Node client ended; events: ${JSON.stringify(events)}`);
        let timer: ReturnType<typeof setTimeout> | undefined;
        let wake!: () => void;
        const woke = new Promise<void>((r) => wake = r);
        waiters.add(wake);
        const left = deadline - Date.now();
        if (left <= 0) {
          waiters.delete(wake);
          throw new Error(`No matching event; events: ${JSON.stringify(events.slice(-20))}`);
        }
        await Promise.race([woke, new Promise<void>((r) => timer = setTimeout(r, left))]);
        clearTimeout(timer);
        waiters.delete(wake);
      }
    },
    async [Symbol.asyncDispose]() {
      try {
        child.kill();
      } catch { /* exited */ }
      await writer.close().catch(() => {});
      await pump.catch(() => {});
      await child.status;
    },
  };
  await client.next((e) => e.ev === "started");
  return client;
}

/** Matches an event by kind and stream. */
export function on(ev: string, id?: number): (e: H2WsEvent) => boolean {
  return (e) => e.ev === ev && (id === undefined || e.id === id);
}
