// An HTTP/2 upstream's trailers reach HTTP/3 clients as a trailing HEADERS frame (RFC 9114 §4.1):
// gRPC's status from a grpc-js server, a node:http2 upstream's own trailer (fields a trailer
// section must not hold left out, RFC 9110 §6.5.1), read by Prox's own HTTP/3 client and by
// ngtcp2's gtlsclient; the access log keeps grpcStatus as over TCP.
import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import { interopTest, ROOT, run, waitFor } from "../_harness.ts";
import { onProxEngines, startProxy } from "./_proxy.ts";
import { ECHO, serveGrpc, trailerUpstream } from "./_grpc.ts";
import { connectH3 } from "../../src/adapters/h3/client.ts";
import { silentLogger } from "../../src/ports.ts";

/** Trailer fields a trailer section must not hold (RFC 9110 §6.5.1): left out by every listener. */
const MUST_NOT = { "content-length": "999", "set-cookie": "sneaky=1", "location": "/elsewhere" };

// Prox's own engines answer these (PROX_H1_ENGINE=deno runs the suite on Deno.serve).
onProxEngines();

const TLS = `${ROOT}/tests/fixtures/tls`;
const ca = Deno.readTextFileSync(`${TLS}/ca.pem`);

function config(target: string): string {
  return `listen_addr: "127.0.0.1:0"
tls:
  cert_path: "${TLS}/cert.pem"
  key_path: "${TLS}/key.pem"
protocols:
  http3_enabled: true
health_check: { enabled: false }
log: { access_log: json }
routes:
  "/":
    type: proxy
    target: "${target}"
    upstream_protocol: h2c
`;
}

/** One gRPC message frame: not compressed, 4-byte length, the bytes. */
function grpcFrame(text: string): Uint8Array {
  const b = new TextEncoder().encode(text);
  const out = new Uint8Array(5 + b.length);
  new DataView(out.buffer).setUint32(1, b.length);
  out.set(b, 5);
  return out;
}

Deno.test("HTTP/3: a gRPC upstream's trailers follow the body, and the access log keeps grpcStatus", async () => {
  await using up = await serveGrpc([ECHO, {
    echo: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) =>
      cb(null, Buffer.concat([Buffer.from("echo:"), call.request])),
  }]);
  const lines: Record<string, unknown>[] = [];
  const logger = {
    ...silentLogger,
    info: (m: string, f?: Record<string, unknown>) => m === "access" && lines.push(f!),
  };
  await using prox = await startProxy(config(`http://127.0.0.1:${up.port}`), {
    keepListen: true,
    tls: true,
    logger,
  });
  assert.ok(prox.server.h3, "h3 listener is up");
  await using h3 = await connectH3({ hostname: "127.0.0.1", port: prox.port, caCerts: [ca] });
  const res = await h3.request("/test.Echo/Echo", {
    method: "POST",
    headers: { "content-type": "application/grpc", te: "trailers" },
    body: grpcFrame("hi"),
  });
  assert.equal(res.status, 200);
  assert.deepEqual(res.body, grpcFrame("echo:hi"));
  assert.equal(res.trailers.find(([k]) => k === "grpc-status")?.[1], "0");
  await waitFor(() => lines.length === 1);
  assert.equal(lines[0].protocol, "h3");
  assert.equal(lines[0].grpcStatus, "0");
});

Deno.test("HTTP/3: an HTTP/2 upstream's trailer follows the body, without fields a trailer section must not hold", async () => {
  await using up = trailerUpstream(MUST_NOT);
  const port = await up.listening;
  await using prox = await startProxy(config(`http://127.0.0.1:${port}`), {
    keepListen: true,
    tls: true,
  });
  await using h3 = await connectH3({ hostname: "127.0.0.1", port: prox.port, caCerts: [ca] });
  const body = new TextEncoder().encode("twelve bytes");
  const res = await h3.request("/up", { method: "POST", body });
  assert.equal(res.status, 200);
  assert.deepEqual(res.body, body);
  assert.deepEqual(res.trailers, [["x-bytes", "12"]]);
  // An empty body: the trailers go out with the head, in the same write.
  const empty = await h3.request("/up", { method: "POST", body: new Uint8Array(0) });
  assert.equal(empty.body.length, 0);
  assert.deepEqual(empty.trailers, [["x-bytes", "0"]]);
  // A HEAD has no body, so no trailers either (the head alone, then FIN).
  const head = await h3.request("/up", { method: "HEAD" });
  assert.equal(head.status, 200);
  assert.deepEqual(head.trailers, []);
});

interopTest("gtlsclient sees an HTTP/2 upstream's trailer after the body over HTTP/3", [
  "gtlsclient",
], async () => {
  await using up = trailerUpstream(MUST_NOT);
  const port = await up.listening;
  await using prox = await startProxy(config(`http://127.0.0.1:${port}`), {
    keepListen: true,
    tls: true,
  });
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/up.bin`, "twelve bytes");
    const out = await run("gtlsclient", [
      "--no-quic-dump",
      "--exit-on-all-streams-close",
      "--timeout=10s",
      ...["-m", "POST", "-d", `${dir}/up.bin`, `--download=${dir}`],
      ...["127.0.0.1", String(prox.port), `https://localhost:${prox.port}/echo`],
    ], { timeoutMs: 30_000 });
    const text = out.stdout + out.stderr;
    assert.match(text, /\[:status: 200\]/);
    assert.equal(await Deno.readTextFile(`${dir}/echo`), "twelve bytes");
    // gtlsclient prints trailer fields as it prints the head's.
    assert.match(text, /\[x-bytes: 12\]/);
    assert.doesNotMatch(text, /sneaky/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

interopTest(
  "HTTP/2 listener: an HTTP/2 upstream's trailers leave out the same fields as HTTP/1.1 and HTTP/3",
  ["curl"],
  async () => {
    await using up = trailerUpstream(MUST_NOT);
    const port = await up.listening;
    await using prox = await startProxy(config(`http://127.0.0.1:${port}`), {
      keepListen: true,
      tls: true,
    });
    const out = await run("curl", [
      "-sS",
      "--http2",
      "--cacert",
      `${TLS}/ca.pem`,
      "-D",
      "-",
      "--data-binary",
      "twelve bytes",
      `https://localhost:${prox.port}/up`,
    ], { timeoutMs: 30_000 });
    assert.equal(out.code, 0, out.stderr);
    // curl writes the trailers after the body, on the head's output (here the same).
    assert.match(out.stdout, /^HTTP\/2 200/);
    // It forwarded content-length, set-cookie and location as trailers before.
    assert.match(out.stdout, /\r\n\r\ntwelve bytesx-bytes: 12\r\n$/);
  },
);
