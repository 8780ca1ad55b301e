// Routes with `upstream_protocol: h2c`: gRPC through Prox with @grpc/grpc-js on both ends (unary
// calls, a status in trailers, a trailers-only error, bidirectional streaming), over h2c and over
// TLS; trailers and 1 MiB bodies both ways with curl and a node:http2 upstream; active health
// checks that speak h2c; and what `prox validate` says about h2c with an https target.
import assert from "node:assert/strict";
import http2 from "node:http2";
import * as grpc from "@grpc/grpc-js";
import { interopTest, ROOT, run, waitFor } from "../_harness.ts";
import { onProxEngines, startProxy } from "./_proxy.ts";
import { nodeServer } from "./_node.ts";
import { serveGrpc, trailerUpstream } from "./_grpc.ts";
import { loadConfigText } from "../../src/config/load.ts";
import { silentLogger } from "../../src/ports.ts";

const TLS = `${ROOT}/tests/fixtures/tls`;
const CA = Deno.readTextFileSync(`${TLS}/ca.pem`);

// Trailers go out on Prox's own HTTP/2 engine only (Deno.serve cannot send them).
onProxEngines();

const same = (b: Buffer) => b;
const method = (name: string, stream: boolean) => ({
  path: `/test.Echo/${name}`,
  requestStream: stream,
  responseStream: stream,
  requestSerialize: same,
  requestDeserialize: same,
  responseSerialize: same,
  responseDeserialize: same,
});
const SERVICE = {
  echo: method("Echo", false),
  fail: method("Fail", false),
  chat: method("Chat", true),
};

/** A gRPC server (grpc-js) with an echo, a failing call and a bidirectional stream. */
function grpcServer() {
  return serveGrpc([SERVICE, {
    echo: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) =>
      cb(null, Buffer.concat([Buffer.from("echo:"), call.request])),
    fail: (_call: unknown, cb: grpc.sendUnaryData<Buffer>) =>
      cb({ code: grpc.status.NOT_FOUND, details: "no such thing" }),
    chat: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
      call.on("data", (d: Buffer) => call.write(Buffer.concat([Buffer.from("re:"), d])));
      call.on("end", () => call.end());
    },
  }]);
}

type Unary = (req: Buffer, cb: (e: grpc.ServiceError | null, v?: Buffer) => void) => void;
interface EchoClient extends grpc.Client {
  echo: Unary;
  fail: Unary;
  chat(): grpc.ClientDuplexStream<Buffer, Buffer>;
}

function call(f: Unary, req: string): Promise<string> {
  return new Promise((resolve) =>
    f(Buffer.from(req), (e, v) => resolve(e ? `error ${e.code}: ${e.details}` : String(v)))
  );
}

function config(target: string, tls: boolean, extra = "", protocol = "h2c"): string {
  return `${
    tls ? `tls:\n  cert_path: "${TLS}/cert.pem"\n  key_path: "${TLS}/key.pem"\n` : ""
  }health_check: { enabled: false }
routes:
  "/":
    type: proxy
    target: "${target}"
    upstream_protocol: ${protocol}
${extra}`;
}

/** A unary call, a failing one and a bidirectional stream through Prox at `port`. */
async function grpcCalls(port: number, tls: boolean): Promise<void> {
  const Client = grpc.makeGenericClientConstructor(
    SERVICE as unknown as grpc.ServiceDefinition,
    "Echo",
  );
  const client =
    (tls
      ? new Client(`127.0.0.1:${port}`, grpc.credentials.createSsl(Buffer.from(CA)), {
        "grpc.ssl_target_name_override": "localhost",
        "grpc.default_authority": "localhost",
      })
      : new Client(
        `127.0.0.1:${port}`,
        grpc.credentials.createInsecure(),
      )) as unknown as EchoClient;
  try {
    assert.equal(await call(client.echo.bind(client), "hi"), "echo:hi");
    // A status other than OK comes in a trailers-only answer.
    assert.equal(await call(client.fail.bind(client), "x"), "error 5: no such thing");
    const chat = client.chat();
    const got: string[] = [];
    chat.on("data", (d: Buffer) => got.push(String(d)));
    const status = new Promise<number>((resolve) =>
      chat.on("status", (s: grpc.StatusObject) => resolve(s.code))
    );
    chat.write(Buffer.from("a"));
    // Each message comes back before the client's stream ends: both directions stream.
    await waitFor(() => got.length === 1);
    chat.write(Buffer.from("b"));
    chat.end();
    assert.equal(await status, grpc.status.OK);
    assert.deepEqual(got, ["re:a", "re:b"]);
  } finally {
    client.close();
  }
}

for (const tls of [false, true]) {
  Deno.test(`gRPC through Prox to an h2c upstream (grpc-js both ends, ${tls ? "TLS" : "h2c"} to Prox)`, async () => {
    await using up = await grpcServer();
    const lines: Record<string, unknown>[] = [];
    const logger = {
      ...silentLogger,
      info: (m: string, f?: Record<string, unknown>) => m === "access" && lines.push(f!),
    };
    await using prox = await startProxy(
      config(`http://127.0.0.1:${up.port}`, tls) + "log: { access_log: json }\n",
      { logger },
    );
    await grpcCalls(prox.port, tls);
    // The access log says how each call ended, which its HTTP status (200) does not.
    await waitFor(() => lines.length === 3);
    const byPath = new Map(lines.map((l) => [l.path, l.grpcStatus]));
    assert.equal(byPath.get("/test.Echo/Echo"), "0");
    assert.equal(byPath.get("/test.Echo/Fail"), "5");
    assert.equal(byPath.get("/test.Echo/Chat"), "0");
  });
}

/**
 * Node's own http2 over TLS as an upstream (Deno's node:tls server cannot finish a handshake with
 * this certificate): echoes the body, names the request's scheme, then a trailer.
 */
async function nodeTlsUpstream() {
  const script = `
    const http2 = require("node:http2");
    const fs = require("node:fs");
    const server = http2.createSecureServer({
      cert: fs.readFileSync(${JSON.stringify(`${TLS}/cert.pem`)}),
      key: fs.readFileSync(${JSON.stringify(`${TLS}/key.pem`)}),
    });
    server.on("stream", (stream, headers) => {
      const chunks = [];
      stream.on("data", (c) => chunks.push(c));
      stream.on("end", () => {
        const body = Buffer.concat(chunks);
        stream.respond({ ":status": 200, "x-scheme": headers[":scheme"] }, { waitForTrailers: true });
        stream.on("wantTrailers", () => stream.sendTrailers({ "x-bytes": String(body.length) }));
        stream.end(body);
      });
    });
    server.listen(0, "127.0.0.1", () => console.log(server.address().port));
  `;
  const node = await nodeServer(script);
  return { port: Number(node.line), [Symbol.asyncDispose]: () => node[Symbol.asyncDispose]() };
}

interopTest("upstream_protocol: h2 — HTTP/2 over TLS to the upstream, its trailer passed on", [
  "node",
  "curl",
], async () => {
  await using up = await nodeTlsUpstream();
  await using prox = await startProxy(
    config(
      `https://127.0.0.1:${up.port}`,
      true,
      `    tls: { ca_cert: "${TLS}/ca.pem" }\n`,
      "h2",
    ),
  );
  const out = await run("curl", [
    "-sS",
    "--http2",
    "--cacert",
    `${TLS}/ca.pem`,
    "-D",
    "-",
    "--data-binary",
    "twelve bytes",
    `https://localhost:${prox.port}/`,
  ]);
  assert.equal(out.code, 0, out.stderr);
  assert.match(out.stdout, /^HTTP\/2 200/);
  assert.match(out.stdout, /^x-scheme: https\r?$/m);
  // curl writes the trailers to the head's output, which here is also where the body goes.
  assert.match(out.stdout, /\r\n\r\ntwelve bytesx-bytes: 12\r\n$/);
});

interopTest("curl over TLS: 1 MiB up and back through an h2c upstream, its trailer passed on", [
  "curl",
], async () => {
  await using up = trailerUpstream();
  const port = await up.listening;
  await using prox = await startProxy(config(`http://127.0.0.1:${port}`, true));
  const dir = await Deno.makeTempDir();
  try {
    const big = Uint8Array.from({ length: 1 << 20 }, (_, i) => (i * 13 + (i >> 12)) & 0xff);
    await Deno.writeFile(`${dir}/up`, big);
    const out = await run("curl", [
      "-sS",
      "--http2",
      "--cacert",
      `${TLS}/ca.pem`,
      "--data-binary",
      `@${dir}/up`,
      "-H",
      "content-type: application/octet-stream",
      "-D",
      `${dir}/head`,
      "-o",
      `${dir}/down`,
      `https://localhost:${prox.port}/upload?x=1`,
    ]);
    assert.equal(out.code, 0, out.stderr);
    assert.deepEqual(await Deno.readFile(`${dir}/down`), big);
    const head = await Deno.readTextFile(`${dir}/head`);
    assert.match(head, /^HTTP\/2 200/);
    // curl writes trailers after the head: the upstream's count of what it received.
    assert.match(head, new RegExp(`^x-bytes: ${big.length}\\r?$`, "m"));
    assert.equal(up.seen[0][":path"], "/upload?x=1");
    assert.equal(up.seen[0]["te"], "trailers");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("active health checks of an h2c route speak h2c", async () => {
  await using up = trailerUpstream();
  const port = await up.listening;
  await using prox = await startProxy(`health_check:
  enabled: true
  interval_secs: 1
  path: /healthz
routes:
  "/":
    type: load_balance
    targets: ["http://127.0.0.1:${port}"]
    upstream_protocol: h2c
`);
  await waitFor(() => up.seen.some((h) => h[":path"] === "/healthz"));
  const res = await fetch(`${prox.url}/ok`, { method: "POST", body: "ping" });
  assert.equal(res.status, 200);
  assert.equal(await res.text(), "ping");
});

Deno.test("gRPC health checks (grpc.health.v1): NOT_SERVING takes a target out, SERVING brings it back", async () => {
  let serving = 1;
  const asked: string[] = [];
  const health = {
    check: {
      path: "/grpc.health.v1.Health/Check",
      requestStream: false,
      responseStream: false,
      requestSerialize: same,
      requestDeserialize: same,
      responseSerialize: same,
      responseDeserialize: same,
    },
  };
  await using up = await serveGrpc([health, {
    check: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
      // HealthCheckRequest { string service = 1 }: the name after its tag and length.
      asked.push(String(call.request.subarray(2)));
      cb(null, Buffer.from([0x08, serving]));
    },
  }], [SERVICE, {
    echo: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) =>
      cb(null, Buffer.concat([Buffer.from("echo:"), call.request])),
    fail: (_call: unknown, cb: grpc.sendUnaryData<Buffer>) => cb({ code: grpc.status.INTERNAL }),
    chat: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => call.end(),
  }]);
  const port = up.port;
  await using prox = await startProxy(`health_check:
  { enabled: false, interval_secs: 1, unhealthy_threshold: 1, healthy_threshold: 1 }
routes:
  "/":
    type: load_balance
    targets: ["http://127.0.0.1:${port}"]
    upstream_protocol: h2c
    health_check:
      enabled: true
      grpc_service: echo.v1
`);
  const status = () =>
    fetch(`${prox.url}/test.Echo/Echo`).then(async (r) => {
      await r.body?.cancel();
      return r.status;
    });
  await waitFor(() => asked.length > 0);
  assert.equal(asked[0], "echo.v1");
  // A GET to a gRPC service is its own answer (not a 503 of Prox's): the target is up.
  assert.notEqual(await status(), 503);
  serving = 2;
  await waitFor(async () => (await status()) === 503, { timeoutMs: 10_000 });
  serving = 1;
  await waitFor(async () => (await status()) !== 503, { timeoutMs: 10_000 });
});

Deno.test("validate: upstream_protocol h2c with an https target, or with proxy_protocol, is refused at its key", () => {
  const errors = (yaml: string) =>
    loadConfigText(`listen_addr: "127.0.0.1:0"\nroutes:\n  "/":\n${yaml}`, {
      file: "c.yaml",
      env: { exists: () => true },
    })
      .issues.filter((i) => i.severity === "error")
      .map((i) => `${i.line}:${i.col} ${i.path}: ${i.message}`);
  assert.deepEqual(
    errors(`    type: proxy\n    target: "http://127.0.0.1:9"\n    upstream_protocol: h2c\n`),
    [],
  );
  const https = errors(
    `    type: proxy\n    target: "https://127.0.0.1:9"\n    upstream_protocol: h2c\n`,
  );
  assert.equal(https.length, 1, https.join("\n"));
  assert.match(https[0], /^5:\d+ routes\.\/\.target: .*HTTP\/2 without TLS/);
  const pp = errors(
    `    type: load_balance\n    targets: ["http://127.0.0.1:9"]\n    upstream_protocol: h2c\n    proxy_protocol: v2\n`,
  );
  assert.equal(pp.length, 1, pp.join("\n"));
  assert.match(pp[0], /^7:\d+ routes\.\/\.proxy_protocol: proxy_protocol cannot be combined/);
  const h2 = errors(
    `    type: proxy\n    target: "http://127.0.0.1:9"\n    upstream_protocol: h2\n`,
  );
  assert.equal(h2.length, 1, h2.join("\n"));
  assert.match(h2[0], /^5:\d+ routes\.\/\.target: upstream_protocol h2 is HTTP\/2 over TLS/);
  const grpcCheck = errors(
    `    type: proxy\n    target: "http://127.0.0.1:9"\n    health_check: { grpc_service: "" }\n`,
  );
  assert.equal(grpcCheck.length, 1, grpcCheck.join("\n"));
  assert.match(grpcCheck[0], /health_check\.grpc_service: gRPC health checks need HTTP\/2/);
  const web = errors(
    `    type: proxy\n    target: "http://127.0.0.1:9"\n    grpc_web: true\n`,
  );
  assert.equal(web.length, 1, web.join("\n"));
  assert.match(web[0], /grpc_web: grpc_web needs HTTP\/2/);
  // On Deno.serve the trailers cannot go out: a warning says so.
  const warned = loadConfigText(
    `listen_addr: "127.0.0.1:0"\nprotocols: { http1_engine: deno }\nroutes:\n  "/":\n` +
      `    type: proxy\n    target: "http://127.0.0.1:9"\n    upstream_protocol: h2c\n`,
    { file: "c.yaml", env: { exists: () => true } },
  ).issues.map((i) => `${i.severity} ${i.path}: ${i.message}`);
  assert.equal(warned.length, 1, warned.join("\n"));
  assert.match(
    warned[0],
    /^warning routes\.\/\.upstream_protocol: .*dropped with http1_engine: deno/,
  );
});

/** gRPC-Web frames of a body: [flag, payload] each. */
function frames(body: Uint8Array): [number, string][] {
  const out: [number, string][] = [];
  for (let at = 0; at < body.length;) {
    const len = new DataView(body.buffer, body.byteOffset + at + 1, 4).getUint32(0);
    out.push([body[at], new TextDecoder().decode(body.subarray(at + 5, at + 5 + len))]);
    at += 5 + len;
  }
  return out;
}

const webFrame = (s: string) => {
  const b = new Uint8Array(5 + s.length);
  new DataView(b.buffer).setUint32(1, s.length);
  b.set(new TextEncoder().encode(s), 5);
  return b;
};

Deno.test("gRPC-Web (grpc_web: true): binary and text requests over HTTP/1.1 reach a gRPC upstream, trailers come back as the last frame", async () => {
  const streaming = { ...method("Stream", false), responseStream: true };
  await using up = await serveGrpc([{ ...SERVICE, stream: streaming }, {
    echo: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) =>
      cb(null, Buffer.concat([Buffer.from("echo:"), call.request])),
    fail: (_call: unknown, cb: grpc.sendUnaryData<Buffer>) =>
      cb({ code: grpc.status.NOT_FOUND, details: "no such thing" }),
    chat: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => call.end(),
    stream: (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
      for (const n of ["one", "two", "three"]) call.write(Buffer.from(`${n}:${call.request}`));
      call.end();
    },
  }]);
  const port = up.port;
  await using prox = await startProxy(
    config(`http://127.0.0.1:${port}`, false, "    grpc_web: true\n"),
  );
  const post = (path: string, type: string, body: Uint8Array<ArrayBuffer> | string) =>
    fetch(`${prox.url}/test.Echo/${path}`, {
      method: "POST",
      headers: { "content-type": type, "x-grpc-web": "1" },
      body,
    });
  // Binary.
  let res = await post("Echo", "application/grpc-web+proto", webFrame("hi"));
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("content-type"), "application/grpc-web+proto");
  let got = frames(new Uint8Array(await res.arrayBuffer()));
  assert.deepEqual(got[0], [0, "echo:hi"]);
  assert.equal(got[1][0], 0x80);
  assert.match(got[1][1], /^grpc-status:0\r\n/m);
  assert.equal(got.length, 2);
  // Text: base64 both ways.
  const b64 = btoa(String.fromCharCode(...webFrame("txt")));
  res = await post("Echo", "application/grpc-web-text", b64);
  assert.equal(res.headers.get("content-type"), "application/grpc-web-text+proto");
  const decoded = Uint8Array.from(atob(await res.text()), (c) => c.charCodeAt(0));
  got = frames(decoded);
  assert.deepEqual(got[0], [0, "echo:txt"]);
  assert.match(got[1][1], /grpc-status:0\r\n/);
  // A server stream: each message, then the trailers.
  res = await post("Stream", "application/grpc-web", webFrame("s"));
  got = frames(new Uint8Array(await res.arrayBuffer()));
  assert.deepEqual(got.slice(0, 3), [[0, "one:s"], [0, "two:s"], [0, "three:s"]]);
  assert.match(got[3][1], /grpc-status:0/);
  // A trailers-only answer keeps its status in the head.
  res = await post("Fail", "application/grpc-web", webFrame("x"));
  assert.equal(res.headers.get("grpc-status"), "5");
  assert.equal(await res.text(), "");
  // Text that is not base64: Prox's 400, as gRPC-Web says a failure (INTERNAL).
  res = await post("Echo", "application/grpc-web-text", "not base64!");
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("content-type"), "application/grpc-web-text");
  assert.equal(res.headers.get("grpc-status"), "13");
  assert.equal(res.headers.get("grpc-message"), "Bad request");
  await res.body?.cancel();
});

interopTest(
  "an HTTP/1.1 client that sends TE: trailers gets the upstream's trailers in the last chunk",
  [
    "curl",
  ],
  async () => {
    await using up = trailerUpstream();
    const port = await up.listening;
    await using prox = await startProxy(config(`http://127.0.0.1:${port}`, false));
    const ask = (...extra: string[]) =>
      run("curl", [
        "-sS",
        "--http1.1",
        "--raw",
        "-D",
        "-",
        "--data-binary",
        "seven b",
        ...extra,
        `${prox.url}/`,
      ]);
    const asked = await ask("-H", "TE: trailers");
    assert.equal(asked.code, 0, asked.stderr);
    assert.match(asked.stdout, /^transfer-encoding: chunked\r$/m);
    // The raw chunked body: the data, then the last chunk with the trailer.
    assert.match(asked.stdout, /\r\n7\r\nseven b\r\n0\r\nx-bytes: 7\r\n\r\n$/);
    const plain = await ask();
    assert.equal(plain.code, 0, plain.stderr);
    assert.match(plain.stdout, /\r\n7\r\nseven b\r\n0\r\n\r\n$/);
  },
);

Deno.test("Prox's own failures reach a gRPC client as gRPC statuses (UNAVAILABLE, UNIMPLEMENTED, RESOURCE_EXHAUSTED)", async () => {
  const dead = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const deadPort = (dead.addr as Deno.NetAddr).port;
  dead.close();
  await using up = await grpcServer();
  const lines: Record<string, unknown>[] = [];
  const logger = {
    ...silentLogger,
    info: (m: string, f?: Record<string, unknown>) => m === "access" && lines.push(f!),
  };
  await using prox = await startProxy(
    `health_check: { enabled: false }
log: { access_log: json }
routes:
  "/test.Echo/Echo":
    type: proxy
    target: "http://127.0.0.1:${deadPort}"
    upstream_protocol: h2c
    retries: { attempts: 0 }
  "/test.Echo/Fail":
    type: proxy
    # The route's prefix is stripped: the target puts the method's path back.
    target: "http://127.0.0.1:${up.port}/test.Echo/Fail"
    upstream_protocol: h2c
    rate_limit: { by: ip, requests: 1, period: 1m }
`,
    { logger },
  );
  const Client = grpc.makeGenericClientConstructor(
    SERVICE as unknown as grpc.ServiceDefinition,
    "Echo",
  );
  const client = new Client(
    `127.0.0.1:${prox.port}`,
    grpc.credentials.createInsecure(),
  ) as unknown as EchoClient;
  try {
    assert.match(await call(client.echo.bind(client), "x"), /^error 14: Bad gateway/);
    // The first call goes through (the service's own NOT_FOUND), the second is limited.
    assert.equal(await call(client.fail.bind(client), "x"), "error 5: no such thing");
    assert.match(await call(client.fail.bind(client), "x"), /^error 8: /);
    // No route for the method.
    const chat = client.chat();
    const status = new Promise<grpc.StatusObject>((resolve) => chat.on("status", resolve));
    chat.on("error", () => {});
    chat.end();
    assert.equal((await status).code, grpc.status.UNIMPLEMENTED);
  } finally {
    client.close();
  }
  // Logs and metrics keep the HTTP status of the failure, with the gRPC one beside it.
  await waitFor(() => lines.length === 4);
  const seen = lines.map((l) => `${l.path} ${l.status} ${l.grpcStatus}`);
  assert.deepEqual(seen, [
    "/test.Echo/Echo 502 14",
    "/test.Echo/Fail 200 5",
    "/test.Echo/Fail 429 8",
    "/test.Echo/Chat 404 12",
  ]);
});

Deno.test("compress and cache on an h2c route keep the upstream's trailers on the answers they pass on", async () => {
  const server = http2.createServer();
  server.on("stream", (stream: http2.ServerHttp2Stream) => {
    stream.respond({
      ":status": 200,
      "content-type": "text/plain",
      "cache-control": "max-age=60",
    }, { waitForTrailers: true });
    stream.on("wantTrailers", () => stream.sendTrailers({ "x-sum": "42" }));
    stream.end("compressible text ".repeat(200));
  });
  const port = await new Promise<number>((resolve) =>
    server.listen(0, "127.0.0.1", () => resolve((server.address() as { port: number }).port))
  );
  const route = (path: string, extra: string) =>
    `  "${path}":\n    type: proxy\n    target: "http://127.0.0.1:${port}"\n    upstream_protocol: h2c\n    ${extra}\n`;
  await using prox = await startProxy(
    `health_check: { enabled: false }\nroutes:\n${route("/z", "compress: true")}${
      route("/k", "cache: true")
    }`,
  );
  const session = http2.connect(`http://127.0.0.1:${prox.port}`);
  const ask = (path: string) =>
    new Promise<{ head: http2.IncomingHttpHeaders; trailers: http2.IncomingHttpHeaders | null }>(
      (resolve, reject) => {
        const req = session.request({ ":path": path, "accept-encoding": "gzip" });
        let head: http2.IncomingHttpHeaders = {};
        let trailers: http2.IncomingHttpHeaders | null = null;
        req.on("response", (h) => head = h);
        req.on("trailers", (t) => trailers = t);
        req.on("data", () => {});
        req.on("end", () => resolve({ head, trailers }));
        req.on("error", reject);
      },
    );
  try {
    const zipped = await ask("/z");
    assert.equal(zipped.head["content-encoding"], "gzip");
    assert.equal(zipped.trailers?.["x-sum"], "42");
    const filled = await ask("/k");
    assert.equal(filled.trailers?.["x-sum"], "42");
  } finally {
    session.close();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
});

/**
 * A node:http2 upstream that refuses its first `refuse` streams (REFUSED_STREAM): before reading
 * anything of them, or (`afterData`) once their body's first bytes came; the others are echoed.
 */
function refusingUpstream(refuse: number, afterData = false) {
  const server = http2.createServer();
  let streams = 0;
  const waiting: [number, () => void][] = [];
  server.on("stream", (stream: http2.ServerHttp2Stream) => {
    const n = ++streams;
    for (const [at, wake] of waiting) if (n >= at) wake();
    stream.on("error", () => {});
    if (n <= refuse) {
      const no = () => stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
      if (afterData) stream.once("data", no);
      else no();
      return;
    }
    const got: Uint8Array[] = [];
    stream.on("data", (c: Uint8Array) => got.push(c));
    stream.on("end", () => {
      stream.respond({ ":status": 200 });
      stream.end(Buffer.concat(got));
    });
  });
  const listening = new Promise<number>((resolve) =>
    server.listen(0, "127.0.0.1", () => resolve((server.address() as { port: number }).port))
  );
  return {
    listening,
    streams: () => streams,
    /** Resolves once the upstream has seen `n` streams. */
    seen: (n: number) => new Promise<void>((r) => n <= streams ? r() : waiting.push([n, r])),
    async [Symbol.asyncDispose]() {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

Deno.test("h2c: a streamed body refused twice before any of it was read goes again whole (the client's retry, then the route's)", async () => {
  await using up = refusingUpstream(2);
  const port = await up.listening;
  await using prox = await startProxy(config(`http://127.0.0.1:${port}`, false));
  const enc = new TextEncoder();
  const parts = ["hello ", "world"];
  // The body's first bytes come only once the upstream saw its third stream.
  const body = new ReadableStream<Uint8Array>({
    async pull(c) {
      await up.seen(3);
      const part = parts.shift();
      if (part === undefined) c.close();
      else c.enqueue(enc.encode(part));
    },
  });
  const res = await fetch(`${prox.url}/up`, { method: "POST", body });
  assert.equal(res.status, 200);
  assert.equal(await res.text(), "hello world");
  assert.equal(up.streams(), 3);
});

Deno.test("h2c: a streamed body refused once some of it was read is not sent again (502)", async () => {
  await using up = refusingUpstream(1, true);
  const port = await up.listening;
  await using prox = await startProxy(config(`http://127.0.0.1:${port}`, false));
  const body = new ReadableStream<Uint8Array>({
    start(c) {
      c.enqueue(new TextEncoder().encode("hello"));
      c.close();
    },
  });
  const res = await fetch(`${prox.url}/up`, { method: "POST", body });
  assert.equal(res.status, 502);
  await res.body?.cancel();
  assert.equal(up.streams(), 1);
});

Deno.test("h2c: timeouts.total ends an exchange the upstream never answers (504), its stream reset", async () => {
  const server = http2.createServer();
  const resets: number[] = [];
  // Never answers; notes how each stream ended.
  server.on("stream", (stream: http2.ServerHttp2Stream) => {
    stream.on("error", () => {});
    stream.on("close", () => resets.push(stream.rstCode ?? -1));
  });
  const port = await new Promise<number>((resolve) =>
    server.listen(0, "127.0.0.1", () => resolve((server.address() as { port: number }).port))
  );
  try {
    await using prox = await startProxy(
      config(`http://127.0.0.1:${port}`, false, "    timeouts: { total: 300ms }\n"),
    );
    const t0 = performance.now();
    const res = await fetch(`${prox.url}/slow`);
    await res.body?.cancel();
    assert.equal(res.status, 504);
    const ms = performance.now() - t0;
    assert.ok(ms >= 300 && ms < 3_000, `at timeouts.total, not before or long after: ${ms} ms`);
    await waitFor(() => resets.length === 1, { timeoutMs: 3_000, what: "the stream reset" });
    assert.equal(resets[0], http2.constants.NGHTTP2_CANCEL);
  } finally {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
});

for (const window of [4096, 1 << 20]) {
  interopTest(
    `h2c: many uploads at once through an upstream with small windows each arrive whole (stream windows ${window})`,
    [
      "node",
    ],
    async () => {
      // Node's http2 with stream windows of `window` and its connection's 64 KiB, given back as it
      // reads: 24 uploads of 160 KiB on one connection wait for window again and again, in turn (for
      // their streams' and the connection's, or for the connection's alone).
      const script = `
      const http2 = require("node:http2");
      const crypto = require("node:crypto");
      const server = http2.createServer({ settings: { initialWindowSize: ${window} } });
      let sessions = 0;
      server.on("session", () => sessions++);
      server.on("stream", (stream) => {
        const hash = crypto.createHash("sha256");
        let n = 0;
        stream.on("data", (c) => {
          n += c.length;
          hash.update(c);
        });
        stream.on("end", () => {
          stream.respond({ ":status": 200, "x-sessions": String(sessions) });
          stream.end(n + " " + hash.digest("hex"));
        });
      });
      server.listen(0, "127.0.0.1", () => console.log(server.address().port));
    `;
      await using up = await nodeServer(script);
      await using prox = await startProxy(config(`http://127.0.0.1:${up.line}`, false));
      const size = 160 * 1024;
      const uploads = Array.from({ length: 24 }, (_, i) => {
        const body = Uint8Array.from(
          { length: size },
          (_, j) => (j * 7 + i * 31 + (j >> 10)) & 0xff,
        );
        return { body, sha: crypto.subtle.digest("SHA-256", body) };
      });
      const answers = await Promise.all(uploads.map(async ({ body }) => {
        const res = await fetch(`${prox.url}/up`, { method: "POST", body });
        return {
          status: res.status,
          sessions: res.headers.get("x-sessions"),
          text: await res.text(),
        };
      }));
      for (let i = 0; i < uploads.length; i++) {
        const hex = Array.from(new Uint8Array(await uploads[i].sha))
          .map((b) => b.toString(16).padStart(2, "0")).join("");
        assert.deepEqual(answers[i], { status: 200, sessions: "1", text: `${size} ${hex}` });
      }
    },
  );
}
