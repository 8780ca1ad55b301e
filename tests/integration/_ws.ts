// WebSocket test peers from the `ws` npm package (an implementation independent of Deno's):
// an upstream server on 127.0.0.1:0 and a client with promise helpers.

// @ts-types="npm:@types/ws@^8"
import { WebSocket as WsClient, WebSocketServer } from "ws";
import type { IncomingMessage } from "node:http";
// @ts-types="npm:@types/ws@^8"
import type { ClientOptions, RawData, ServerOptions } from "ws";
import { startServer } from "../../src/server.ts";
import type { ProxServer } from "../../src/server.ts";
import { noopMetrics, silentLogger } from "../../src/ports.ts";
import type { Logger, Metrics } from "../../src/ports.ts";
import { createJsonLogger } from "../../src/adapters/log_json.ts";

export { WsClient };

/** A `ws` upstream server; `sockets` holds its live connections. */
export interface WsUpstream extends AsyncDisposable {
  port: number;
  url: string;
  server: WebSocketServer;
  sockets: Set<WsClient>;
  /** Handshake requests seen, newest last. */
  requests: IncomingMessage[];
}

/** Starts a `ws` server that calls `onConnection` for each socket (default: echo). */
export function wsUpstream(
  onConnection: (ws: WsClient, req: IncomingMessage) => void = echo,
  opts: ServerOptions = {},
): Promise<WsUpstream> {
  return new Promise((resolve) => {
    const sockets = new Set<WsClient>();
    const requests: IncomingMessage[] = [];
    const server = new WebSocketServer({ host: "127.0.0.1", port: 0, ...opts });
    server.on("connection", (ws, req) => {
      sockets.add(ws);
      requests.push(req);
      ws.on("close", () => sockets.delete(ws));
      onConnection(ws, req);
    });
    const ready = () => {
      const port = opts.server ? 0 : (server.address() as { port: number }).port;
      resolve({
        port,
        url: `ws://127.0.0.1:${port}`,
        server,
        sockets,
        requests,
        async [Symbol.asyncDispose]() {
          for (const s of sockets) s.terminate();
          await new Promise((r) => server.close(r));
        },
      });
    };
    if (opts.server) ready();
    else server.on("listening", ready);
  });
}

/** Echoes every message back with its type. */
export function echo(ws: WsClient): void {
  ws.on("message", (data, isBinary) => ws.send(data, { binary: isBinary }));
}

/** Opens a `ws` client; rejects with the HTTP status when the handshake is refused. */
export function connect(
  url: string,
  protocols: string[] = [],
  opts: ClientOptions = {},
): Promise<WsClient> {
  return new Promise((resolve, reject) => {
    const ws = new WsClient(url, protocols, opts);
    ws.once("open", () => resolve(ws));
    ws.once("error", reject);
    ws.once("unexpected-response", (_req, res) => {
      let body = "";
      res.on("data", (c: Uint8Array) => body += new TextDecoder().decode(c));
      res.on("end", () => {
        reject(
          Object.assign(new Error(`HTTP ${res.statusCode}`), { status: res.statusCode, body }),
        );
        ws.terminate();
      });
    });
  });
}

/** Opens a client that may be closed right after the handshake; resolves with the close. */
export function connectAndWaitClose(url: string): Promise<{ code: number; reason: string }> {
  return new Promise((resolve, reject) => {
    const ws = new WsClient(url);
    ws.once("error", reject);
    ws.once("close", (code, reason) => resolve({ code, reason: reason.toString() }));
  });
}

/** Resolves with the next `n` messages. */
export function messages(ws: WsClient, n: number): Promise<{ data: Buffer; binary: boolean }[]> {
  return new Promise((resolve) => {
    const got: { data: Buffer; binary: boolean }[] = [];
    const on = (data: RawData, binary: boolean) => {
      got.push({ data: data as Buffer, binary });
      if (got.length === n) {
        ws.off("message", on);
        resolve(got);
      }
    };
    ws.on("message", on);
  });
}

/** Resolves with the close code and reason. */
export function closed(ws: WsClient): Promise<{ code: number; reason: string }> {
  if (ws.readyState === WsClient.CLOSED) return Promise.resolve({ code: -1, reason: "" });
  return new Promise((resolve) => {
    ws.once("close", (code, reason) => resolve({ code, reason: reason.toString() }));
  });
}

/** A Prox started from YAML (a file when `reload` is needed), with counted metrics. */
export interface WsProxy extends AsyncDisposable {
  server: ProxServer;
  port: number;
  ws: string;
  http: string;
  tooBig: string[];
  /** Rewrites the config file and reloads (only for `file: true`). */
  reload(yaml: string): Promise<void>;
}

/** Routes YAML with one websocket route on "/" to `target`; `keys` are more of its keys. */
export function wsRoute(target: string, ...keys: string[]): string {
  return `
routes:
  "/":
    type: websocket
    target: "${target}"
${keys.map((k) => `    ${k}\n`).join("")}`;
}

/** Starts Prox on 127.0.0.1:0; `tls` makes the listener HTTPS with the test certificate. */
export async function startWsProxy(
  yaml: string,
  opts: { file?: boolean; tls?: { cert: string; key: string }; logger?: Logger } = {},
): Promise<WsProxy> {
  const tlsYaml = opts.tls
    ? `tls: { cert_path: "${opts.tls.cert}", key_path: "${opts.tls.key}" }\n`
    : "";
  const text = `listen_addr: "127.0.0.1:0"\nhealth_check: { enabled: false }\n${tlsYaml}${yaml}`;
  const file = opts.file ? await Deno.makeTempFile({ suffix: ".yaml" }) : null;
  if (file) await Deno.writeTextFile(file, text);
  const tooBig: string[] = [];
  const metrics: Metrics = { ...noopMetrics, websocketMessageTooBig: (r) => tooBig.push(r) };
  const server = await startServer(file ? { path: file } : { text, name: "test.yaml" }, {
    logger: opts.logger ??
      (Deno.env.get("PROX_TEST_LOG") ? createJsonLogger({ level: "debug" }) : silentLogger),
    metrics,
  });
  const scheme = opts.tls ? "s" : "";
  return {
    server,
    port: server.port,
    ws: `ws${scheme}://127.0.0.1:${server.port}`,
    http: `http${scheme}://127.0.0.1:${server.port}`,
    tooBig,
    async reload(next: string) {
      if (!file) throw new Error("startWsProxy: reload needs { file: true }");
      await Deno.writeTextFile(
        file,
        `listen_addr: "127.0.0.1:0"\nhealth_check: { enabled: false }\n${tlsYaml}${next}`,
      );
      const r = await server.reload();
      if (!r.ok) throw new Error(`Reload failed: ${JSON.stringify(r.issues)}`);
    },
    async [Symbol.asyncDispose]() {
      await server.shutdown();
      if (file) await Deno.remove(file);
    },
  };
}

/** A `ws` server over HTTPS (node:https) with the given certificate, on 127.0.0.1:0. */
export async function wssUpstream(
  tls: { cert: string; key: string },
  onConnection: (ws: WsClient, req: IncomingMessage) => void = echo,
  opts: ServerOptions = {},
): Promise<WsUpstream> {
  const https = await import("node:https");
  const server = https.createServer({ cert: tls.cert, key: tls.key });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as { port: number }).port;
  const up = await wsUpstream(onConnection, { ...opts, server, port: undefined, host: undefined });
  return {
    ...up,
    port,
    url: `wss://localhost:${port}`,
    async [Symbol.asyncDispose]() {
      await up[Symbol.asyncDispose]();
      await new Promise((r) => server.close(r));
    },
  };
}

/** A Logger that keeps every record (to assert on what Prox decided). */
export function recordingLogger(): Logger & { records: Record<string, unknown>[] } {
  const records: Record<string, unknown>[] = [];
  const log = (level: string, msg: string, fields: Record<string, unknown> = {}) =>
    void records.push({ level, msg, ...fields });
  return {
    records,
    log,
    debug: (m, f) => log("debug", m, f),
    info: (m, f) => log("info", m, f),
    warn: (m, f) => log("warn", m, f),
    error: (m, f) => log("error", m, f),
  };
}
