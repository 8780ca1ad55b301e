// Response filters that rebuild an answer keep an HTTP/2 upstream's trailers when they keep its
// body: a `response_body` rule that sets only `content_type` (grpc-js through Prox still gets its
// status; the access log keeps grpcStatus and the bytes sent), and curl sees the trailer after the
// body; a rule that replaces the body drops them with it (they would describe a body that is gone).
import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import { interopTest, ROOT, run, waitFor } from "../_harness.ts";
import { onProxEngines, startProxy } from "./_proxy.ts";
import { ECHO, serveGrpc, trailerUpstream } from "./_grpc.ts";
import { silentLogger } from "../../src/ports.ts";

const TLS = `${ROOT}/tests/fixtures/tls`;

// Trailers go out on Prox's own HTTP/2 engine only (Deno.serve cannot send them).
onProxEngines();

function config(target: string, rules: string, tls = false): string {
  return `${
    tls ? `tls:\n  cert_path: "${TLS}/cert.pem"\n  key_path: "${TLS}/key.pem"\n` : ""
  }health_check: { enabled: false }
log: { access_log: json }
routes:
  "/":
    type: proxy
    target: "${target}"
    upstream_protocol: h2c
${rules}`;
}

Deno.test("a response_body rule that sets only content_type keeps a gRPC answer's trailers and grpcStatus", async () => {
  await using up = await serveGrpc([ECHO, {
    echo: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) =>
      cb(null, Buffer.concat([Buffer.from("echo:"), call.request])),
  }]);
  const lines: Record<string, unknown>[] = [];
  const logger = {
    ...silentLogger,
    info: (m: string, f?: Record<string, unknown>) => m === "access" && lines.push(f!),
  };
  await using prox = await startProxy(
    config(
      `http://127.0.0.1:${up.port}`,
      `    response_body: { content_type: "application/grpc+proto" }\n`,
    ),
    { logger },
  );
  const Client = grpc.makeGenericClientConstructor(
    ECHO as unknown as grpc.ServiceDefinition,
    "Echo",
  );
  const client = new Client(
    `127.0.0.1:${prox.port}`,
    grpc.credentials.createInsecure(),
  ) as unknown as
    & grpc.Client
    & { echo: (req: Buffer, cb: (e: grpc.ServiceError | null, v?: Buffer) => void) => void };
  try {
    const got = await new Promise<string>((resolve) =>
      client.echo(
        Buffer.from("hi"),
        (e, v) => resolve(e ? `error ${e.code}: ${e.details}` : String(v)),
      )
    );
    assert.equal(got, "echo:hi");
  } finally {
    client.close();
  }
  await waitFor(() => lines.length === 1);
  assert.equal(lines[0].grpcStatus, "0");
  // The body streamed through (no Content-Length): the counter told the log its size.
  assert.equal(lines[0].bytesOut, 5 + "echo:hi".length);
});

interopTest(
  "curl over TLS: response_body's content_type keeps the upstream's trailer; set_text drops it with the body",
  [
    "curl",
  ],
  async () => {
    await using up = trailerUpstream();
    const port = await up.listening;
    await using prox = await startProxy(
      config(
        `http://127.0.0.1:${port}`,
        `    response_body: { content_type: "text/x-kept" }
  "/replaced":
    type: proxy
    target: "http://127.0.0.1:${port}"
    upstream_protocol: h2c
    response_body: { set_text: "replaced" }
`,
        true,
      ),
      { tls: true },
    );
    const curl = (path: string) =>
      run("curl", [
        "-sS",
        "--http2",
        "--cacert",
        `${TLS}/ca.pem`,
        "-D",
        "-",
        "--data-binary",
        "twelve bytes",
        `https://localhost:${prox.port}${path}`,
      ]);
    const kept = await curl("/");
    assert.equal(kept.code, 0, kept.stderr);
    assert.match(kept.stdout, /^content-type: text\/x-kept\r?$/m);
    // curl writes the trailers to the head's output, which here is also where the body goes.
    assert.match(kept.stdout, /\r\n\r\ntwelve bytesx-bytes: 12\r\n$/);
    const replaced = await curl("/replaced");
    assert.equal(replaced.code, 0, replaced.stderr);
    assert.match(replaced.stdout, /\r\n\r\nreplaced$/);
  },
);
