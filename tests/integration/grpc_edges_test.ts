// gRPC features at their edges: gRPC health probes against misbehaving targets, gRPC-Web requests
// Prox must read whole (text) or refuse, and Prox's own failures as gRPC statuses. Real servers
// (@grpc/grpc-js, node:http2) on 127.0.0.1:0 and real clients (fetch, curl, node:http2).
import http2 from "node:http2";
import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import { startUpstream, waitFor } from "../_harness.ts";
import { onProxEngines, startProxy } from "./_proxy.ts";
import { ECHO, serveGrpc } from "./_grpc.ts";
import { silentLogger } from "../../src/ports.ts";

onProxEngines();

Deno.test("gRPC health checks: a target that answers Health/Check with a body that never ends fails its probe within timeout_secs, and is probed again", async () => {
  const server = http2.createServer();
  let probes = 0;
  const timers = new Set<ReturnType<typeof setInterval>>();
  server.on("stream", (stream: http2.ServerHttp2Stream) => {
    probes++;
    stream.respond({ ":status": 200, "content-type": "application/grpc" });
    // A byte now and then, never the whole message: the idle timeout never fires.
    const t = setInterval(() => stream.write(new Uint8Array([0])), 100);
    timers.add(t);
    stream.on("close", () => {
      clearInterval(t);
      timers.delete(t);
    });
    stream.on("error", () => {});
  });
  const port = await new Promise<number>((resolve) =>
    server.listen(0, "127.0.0.1", () => resolve((server.address() as { port: number }).port))
  );
  try {
    await using prox = await startProxy(`health_check:
  { enabled: false, interval_secs: 1, timeout_secs: 1, unhealthy_threshold: 1 }
routes:
  "/":
    type: load_balance
    targets: ["http://127.0.0.1:${port}"]
    upstream_protocol: h2c
    health_check: { enabled: true, grpc_service: "" }
`);
    const status = () =>
      fetch(`${prox.url}/x`).then(async (r) => {
        await r.body?.cancel();
        return r.status;
      });
    await waitFor(async () => (await status()) === 503, { timeoutMs: 8_000 });
    await waitFor(() => probes >= 2, { timeoutMs: 8_000 });
  } finally {
    for (const t of timers) clearInterval(t);
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
});

/** A grpc-js server whose /test.Echo/Echo answers "echo:" and the request's message. */
function echoServer() {
  return serveGrpc([ECHO, {
    echo: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) =>
      cb(null, Buffer.concat([Buffer.from("echo:"), call.request])),
  }]);
}

/** A gRPC message frame of `msg`. */
function frame(msg: Uint8Array): Uint8Array<ArrayBuffer> {
  const b = new Uint8Array(5 + msg.length);
  new DataView(b.buffer).setUint32(1, msg.length);
  b.set(msg, 5);
  return b;
}

const b64 = (bytes: Uint8Array) => {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(s);
};
const unb64 = (s: string) => {
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
};

/** The frames of a gRPC-Web body: [flag, payload] each. */
function frames(body: Uint8Array): [number, Uint8Array][] {
  const out: [number, Uint8Array][] = [];
  for (let at = 0; at < body.length;) {
    const len = new DataView(body.buffer, body.byteOffset + at + 1, 4).getUint32(0);
    out.push([body[at], body.subarray(at + 5, at + 5 + len)]);
    at += 5 + len;
  }
  return out;
}

function webRoute(port: number, extra = ""): string {
  return `health_check: { enabled: false }
routes:
  "/":
    type: proxy
    target: "http://127.0.0.1:${port}"
    upstream_protocol: h2c
    grpc_web: true
${extra}`;
}

Deno.test("gRPC-Web text: a 3 MiB message (4 MiB of text) goes up decoded and comes back whole", async () => {
  await using up = await echoServer();
  await using prox = await startProxy(webRoute(up.port));
  const msg = Uint8Array.from({ length: (3 << 20) - 16 }, (_, i) => (i * 7 + (i >> 9)) & 0xff);
  const body = b64(frame(msg));
  const res = await fetch(`${prox.url}/test.Echo/Echo`, {
    method: "POST",
    headers: { "content-type": "application/grpc-web-text" },
    body,
  });
  const got = frames(unb64(await res.text()));
  assert.equal(res.status, 200);
  assert.equal(got[0][1].length, msg.length + 5);
  assert.deepEqual(got[0][1].subarray(5), msg);
  assert.match(new TextDecoder().decode(got[1][1]), /^grpc-status:0\r\n/);
});

Deno.test("gRPC-Web text behind forward_auth with send_body: the body the check read goes upstream", async () => {
  await using up = await echoServer();
  const seen: string[] = [];
  await using auth = await startUpstream(async (req) => {
    seen.push(await req.text());
    return new Response(null, { status: 200 });
  });
  await using prox = await startProxy(
    webRoute(
      up.port,
      `    forward_auth: { url: "${auth.url}/check", send_body: true, preserve_method: true }\n`,
    ),
  );
  const body = b64(frame(new TextEncoder().encode("authd")));
  const res = await fetch(`${prox.url}/test.Echo/Echo`, {
    method: "POST",
    headers: { "content-type": "application/grpc-web-text" },
    body,
  });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("grpc-status"), null);
  const got = frames(unb64(await res.text()));
  assert.equal(new TextDecoder().decode(got[0][1]), "echo:authd");
  assert.deepEqual(seen, [body]);
});

Deno.test("gRPC-Web: a GET or HEAD with a gRPC-Web type is not an internal error", async () => {
  await using up = await echoServer();
  const errors: string[] = [];
  const logger = {
    ...silentLogger,
    error: (m: string, f?: Record<string, unknown>) => errors.push(`${m} ${f?.error}`),
  };
  await using prox = await startProxy(webRoute(up.port), { logger });
  for (const method of ["GET", "HEAD"]) {
    for (const type of ["application/grpc-web-text", "application/grpc-web"]) {
      const res = await fetch(`${prox.url}/test.Echo/Echo`, {
        method,
        headers: { "content-type": type },
      });
      await res.body?.cancel();
      assert.notEqual(res.headers.get("grpc-status"), "13", `${method} ${type}`);
      assert.notEqual(res.status, 500, `${method} ${type}`);
    }
  }
  assert.deepEqual(errors, []);
});

Deno.test("gRPC-Web text: a body that stops coming gets DEADLINE_EXCEEDED after the route's idle timeout", async () => {
  await using up = await echoServer();
  await using prox = await startProxy(webRoute(up.port, "    timeouts: { idle: 300ms }\n"));
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: prox.port });
  try {
    await conn.write(new TextEncoder().encode(
      "POST /test.Echo/Echo HTTP/1.1\r\nhost: a\r\ncontent-type: application/grpc-web-text\r\n" +
        "content-length: 100\r\n\r\nAAAA",
    ));
    let head = "";
    const buf = new Uint8Array(4096);
    const t0 = Date.now();
    while (!head.includes("\r\n\r\n")) {
      const n = await Promise.race([
        conn.read(buf),
        new Promise<"late">((r) => setTimeout(() => r("late"), 5_000)),
      ]);
      if (n === "late" || n === null) break;
      head += new TextDecoder().decode(buf.subarray(0, n));
    }
    assert.match(head, /^HTTP\/1\.1 200/);
    assert.match(head, /\r\ngrpc-status: 4\r\n/);
    assert.ok(Date.now() - t0 < 4_000);
  } finally {
    conn.close();
  }
});

Deno.test("gRPC-Web over HTTP/2: the trailers go in the body only, not also as HTTP/2 trailers (as Envoy), and the access log keeps grpcStatus", async () => {
  await using up = await echoServer();
  const lines: Record<string, unknown>[] = [];
  const logger = {
    ...silentLogger,
    info: (m: string, f?: Record<string, unknown>) => m === "access" && lines.push(f!),
  };
  await using prox = await startProxy(webRoute(up.port) + "log: { access_log: json }\n", {
    logger,
  });
  const session = http2.connect(`http://127.0.0.1:${prox.port}`);
  try {
    const req = session.request({
      ":method": "POST",
      ":path": "/test.Echo/Echo",
      "content-type": "application/grpc-web+proto",
    });
    const trailers: http2.IncomingHttpHeaders[] = [];
    req.on("trailers", (t) => trailers.push(t));
    const chunks: Uint8Array[] = [];
    req.on("data", (c: Uint8Array) => chunks.push(c));
    const ended = new Promise((resolve) => req.on("close", resolve));
    req.end(frame(new TextEncoder().encode("h2")));
    await ended;
    const body = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
    let at = 0;
    for (const c of chunks) body.set(c, (at += c.length) - c.length);
    const got = frames(body);
    assert.equal(new TextDecoder().decode(got[0][1]), "echo:h2");
    assert.equal(got[1][0], 0x80);
    assert.deepEqual(trailers, []);
  } finally {
    session.close();
  }
  await waitFor(() => lines.length === 1);
  assert.equal(lines[0].grpcStatus, "0");
});

/** Decodes base64 four characters at a time, as gRPC-Web's own client does (padding may come between). */
function decodeGroups(text: string): Uint8Array {
  const out: number[] = [];
  for (let i = 0; i + 4 <= text.length; i += 4) {
    for (const c of atob(text.slice(i, i + 4))) out.push(c.charCodeAt(0));
  }
  return Uint8Array.from(out);
}

Deno.test("gRPC-Web text: each message of a server stream is decodable as it comes, not when the next one does (PROTOCOL-WEB.md)", async () => {
  let release!: () => void;
  const released = new Promise<void>((r) => release = r);
  await using up = await serveGrpc([{
    stream: { ...ECHO.echo, path: "/test.Echo/Stream", responseStream: true },
  }, {
    stream: async (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
      call.write(Buffer.from("one")); // 8 bytes framed: not a whole number of base64 groups
      await released;
      call.write(Buffer.from("two"));
      call.end();
    },
  }]);
  const port = up.port;
  try {
    await using prox = await startProxy(webRoute(port));
    const res = await fetch(`${prox.url}/test.Echo/Stream`, {
      method: "POST",
      headers: { "content-type": "application/grpc-web-text" },
      body: b64(frame(new Uint8Array(0))),
    });
    const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
    let text = "";
    const first = async () => {
      for (;;) {
        const got = frames(decodeGroups(text).subarray(0, 8));
        if (got.length === 1 && got[0][1].length === 3) return got[0];
        const r = await Promise.race([
          reader.read(),
          new Promise<null>((r) => setTimeout(() => r(null), 3_000)),
        ]);
        if (r === null || r.done) return null;
        text += r.value;
      }
    };
    const one = await first();
    release();
    assert.ok(one, `the first message did not come whole: ${JSON.stringify(text)}`);
    assert.equal(new TextDecoder().decode(one[1]), "one");
    for (;;) {
      const r = await reader.read();
      if (r.done) break;
      text += r.value;
    }
    const all = frames(decodeGroups(text));
    assert.deepEqual(all.slice(0, 2).map(([f, p]) => [f, new TextDecoder().decode(p)]), [
      [0, "one"],
      [0, "two"],
    ]);
    assert.match(new TextDecoder().decode(all[2][1]), /^grpc-status:0\r\n/);
  } finally {
    release();
  }
});
