// Bodies stream in both directions: 1 GiB each way through a real Prox process with flat
// memory, and server-sent events arrive one by one.
import assert from "node:assert/strict";
import { interopTest, ROOT, run, startUpstream, waitFor } from "../_harness.ts";
import { memoryLogger } from "./_acme.ts";
import { startProxy } from "./_proxy.ts";
import { spawnProx } from "./_process.ts";

const GiB = 1024 * 1024 * 1024;

interopTest(
  "1 GiB download and upload pass through Prox with RSS under 150 MiB",
  ["curl"],
  async () => {
    // The peers do as little JavaScript as possible: the upstream sends a sparse file and pipes
    // uploads to /dev/null through Deno resources; curl is the client.
    const dir = await Deno.makeTempDir({ prefix: "prox-big-" });
    const file = `${dir}/big.bin`;
    await Deno.writeFile(file, new Uint8Array());
    await Deno.truncate(file, GiB);
    await using up = await startUpstream(async (req) => {
      if (req.method === "PUT") {
        const sink = await Deno.open("/dev/null", { write: true });
        let n = 0;
        await req.body!.pipeThrough(
          new TransformStream({
            transform(c, ctl) {
              n += c.byteLength;
              ctl.enqueue(c);
            },
          }),
        ).pipeTo(sink.writable);
        return new Response(String(n));
      }
      const f = await Deno.open(file);
      return new Response(f.readable, { headers: { "content-length": String(GiB) } });
    });
    await using prox = await spawnProx(`listen_addr: "127.0.0.1:{PORT}"
health_check: { enabled: false }
log: { access_log: false }
timeouts: { response_header: 10m }
routes: { "/": { type: proxy, target: "${up.url}" } }
`);
    const base = `http://127.0.0.1:${prox.port}`;
    const down = await run("curl", [
      "-sS",
      "-o",
      "/dev/null",
      "-w",
      "%{http_code} %{size_download}",
      `${base}/big`,
    ]);
    assert.equal(down.stdout, `200 ${GiB}`, down.stderr);
    const upl = await run("curl", ["-sS", "-T", file, `${base}/upload`]);
    assert.equal(upl.stdout, String(GiB), upl.stderr);
    const mem = prox.memory();
    // deno-lint-ignore no-console
    console.log(`prox peak RSS after 1 GiB each way: ${(mem.peak / 1048576).toFixed(1)} MiB`);
    await Deno.remove(dir, { recursive: true });
    assert.ok(mem.peak < 150 * 1024 * 1024, `peak RSS ${mem.peak} bytes`);
  },
);

Deno.test("server-sent events arrive event by event", async () => {
  const next = Promise.withResolvers<void>();
  await using up = await startUpstream(() => {
    const enc = new TextEncoder();
    const body = new ReadableStream({
      async start(ctl) {
        ctl.enqueue(enc.encode("data: one\n\n"));
        await next.promise; // the second event only after the client saw the first
        ctl.enqueue(enc.encode("data: two\n\n"));
        ctl.close();
      },
    });
    return new Response(body, { headers: { "content-type": "text/event-stream" } });
  });
  await using prox = await startProxy(`
health_check: { enabled: false }
routes: { "/": { type: proxy, target: "${up.url}" } }
`);
  const res = await fetch(`${prox.url}/events`);
  const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
  let seen = "";
  while (!seen.includes("data: one\n\n")) seen += (await reader.read()).value ?? "";
  assert.ok(!seen.includes("two"));
  next.resolve();
  while (!seen.includes("data: two\n\n")) {
    const r = await reader.read();
    if (r.done) break;
    seen += r.value;
  }
  assert.equal(seen, "data: one\n\ndata: two\n\n");
  reader.releaseLock();
});

Deno.test("a client that stops reading a download is cut after the idle timeout, and blamed", async () => {
  const chunk = new Uint8Array(64 * 1024);
  const upstreamCut = Promise.withResolvers<void>();
  await using up = await startUpstream(() =>
    new Response(
      new ReadableStream({
        pull: (ctl) => ctl.enqueue(chunk),
        cancel: () => upstreamCut.resolve(),
      }, { highWaterMark: 0 }),
    )
  );
  const logger = memoryLogger();
  await using prox = await startProxy(
    `
health_check: { enabled: false }
routes: { "/": { type: proxy, target: "${up.url}", timeouts: { idle: 200ms } } }
`,
    { logger },
  );
  const c = await Deno.connect({ hostname: "127.0.0.1", port: prox.port });
  try {
    await c.write(new TextEncoder().encode("GET /big HTTP/1.1\r\nHost: a.test\r\n\r\n"));
    // Reads nothing: once the socket buffers are full, Prox stops reading the upstream, and
    // after the idle timeout closes that connection.
    await upstreamCut.promise;
    const buf = new Uint8Array(1 << 20);
    while (await c.read(buf) !== null) { /* what was buffered, then the cut */ }
  } finally {
    c.close();
  }
  const failed = () => logger.lines.find((l) => l.includes("Response body failed"));
  await waitFor(() => failed() !== undefined, { what: "the log line of the cut download" });
  // Was `timeout` "Upstream … was idle for 200 ms": the upstream had data; the client took none.
  assert.match(failed()!, /"kind":"client_gone".*read none of the response for 200 ms/);
  // Tied to its access-log line: the request id and route were missing.
  assert.match(failed()!, /"requestId":"[^"]+","route":"\/"/);
});

Deno.test("a client that stops reading a download from an HTTP/2 upstream is blamed too", async () => {
  const tls = `${ROOT}/tests/fixtures/tls`;
  const chunk = new Uint8Array(64 * 1024);
  const upstreamCut = Promise.withResolvers<void>();
  await using up = await startUpstream(() =>
    new Response(
      new ReadableStream({
        pull: (ctl) => ctl.enqueue(chunk),
        cancel: () => upstreamCut.resolve(),
      }, { highWaterMark: 0 }),
    ), {
    cert: Deno.readTextFileSync(`${tls}/cert.pem`),
    key: Deno.readTextFileSync(`${tls}/key.pem`),
  });
  const logger = memoryLogger();
  await using prox = await startProxy(
    `
health_check: { enabled: false }
routes:
  "/":
    type: proxy
    target: "https://localhost:${up.port}"
    tls: { ca_cert: "${tls}/ca.pem" }
    timeouts: { idle: 200ms }
`,
    { logger },
  );
  const c = await Deno.connect({ hostname: "127.0.0.1", port: prox.port });
  try {
    // The fields fetch would send itself: the request goes over HTTP/2 (upstream_h2.ts).
    await c.write(new TextEncoder().encode(
      "GET /big HTTP/1.1\r\nHost: a.test\r\naccept-encoding: identity\r\naccept: */*\r\n" +
        "accept-language: *\r\nuser-agent: t/1\r\n\r\n",
    ));
    await upstreamCut.promise;
    const buf = new Uint8Array(1 << 20);
    while (await c.read(buf) !== null) { /* what was buffered, then the cut */ }
  } finally {
    c.close();
  }
  const failed = () => logger.lines.find((l) => l.includes("Response body failed"));
  await waitFor(() => failed() !== undefined, { what: "the log line of the cut download" });
  assert.match(failed()!, /"kind":"client_gone".*read none of the response for 200 ms/);
});

Deno.test("an HTTP/2 upstream that resets mid-body is an upstream failure, not an unhandled error", async () => {
  const tls = `${ROOT}/tests/fixtures/tls`;
  await using up = await startUpstream(() => {
    let sent = false;
    return new Response(
      new ReadableStream({
        async pull(ctl) {
          if (sent) {
            // Once the head is surely through: the stream is reset mid-body.
            await new Promise((r) => setTimeout(r, 100));
            return ctl.error(new Error("upstream failed mid-body"));
          }
          sent = true;
          ctl.enqueue(new TextEncoder().encode("part"));
        },
      }, { highWaterMark: 0 }),
    );
  }, {
    cert: Deno.readTextFileSync(`${tls}/cert.pem`),
    key: Deno.readTextFileSync(`${tls}/key.pem`),
  });
  const logger = memoryLogger();
  await using prox = await startProxy(
    `
health_check: { enabled: false }
routes:
  "/": { type: proxy, target: "https://localhost:${up.port}", tls: { ca_cert: "${tls}/ca.pem" } }
`,
    { logger },
  );
  // The fields fetch would send itself: the request goes over HTTP/2 (upstream_h2.ts).
  const headers = { "accept-encoding": "identity", "accept-language": "*", "user-agent": "t/1" };
  const res = await fetch(`${prox.url}/reset`, { headers });
  await assert.rejects(res.text());
  const failed = () => logger.lines.find((l) => /Response body failed|Unhandled error/.test(l));
  await waitFor(() => failed() !== undefined, { what: "the log line of the cut body" });
  // Was `error Unhandled error in request handler {"error":"TypeError: error reading a body…"}`.
  assert.match(failed()!, /^warn .*"kind":"upstream_reset"/);
  assert.match(failed()!, /"requestId":"[^"]+","route":"\/"/);
  assert.deepEqual(logger.lines.filter((l) => l.startsWith("error")), []);
});

interopTest(
  "a small streamed answer over TLS goes out without waiting for the client's delayed ACK, HTTP/1.1 and HTTP/2",
  ["curl"],
  async () => {
    // Deno gives TLS connections no TCP_NODELAY: an answer written as head, chunk and last chunk
    // (HTTP/2: HEADERS, DATA, END_STREAM) in separate writes waited for the client's delayed ACK
    // of the first (Nagle), 40 ms or more per answer on a keep-alive connection, against well
    // under one when they go out together. The bound below is half that stall.
    const TLS = `${ROOT}/tests/fixtures/tls`;
    await using up = await startUpstream(() =>
      new Response(
        new ReadableStream({
          start(c) {
            c.enqueue(new TextEncoder().encode("hello"));
            c.close();
          },
        }),
      )
    );
    await using prox = await startProxy(
      `listen_addr: "127.0.0.1:0"
tls: { cert_path: "${TLS}/cert.pem", key_path: "${TLS}/key.pem" }
health_check: { enabled: false }
protocols: { http1_engine: prox }
routes:
  "/": { type: proxy, target: "${up.url}" }
`,
      { keepListen: true, tls: true },
    );
    for (const version of ["--http1.1", "--http2"]) {
      const url = `https://localhost:${prox.port}/`;
      const out = await run("curl", [
        "-sS",
        version,
        "--cacert",
        `${TLS}/ca.pem`,
        "-w",
        " %{time_total}\\n",
        ...Array(9).fill(url),
      ]);
      assert.equal(out.code, 0, out.stderr);
      // The first request pays for the handshake; the other eight reuse the connection.
      const times = [...out.stdout.matchAll(/^hello ([0-9.]+)$/gm)].slice(1).map((m) =>
        Number(m[1])
      )
        .sort((a, b) => a - b);
      assert.equal(times.length, 8);
      assert.ok(times[4] < 0.02, `${version}: median ${times[4]} s per answer (${times})`);
    }
  },
);
