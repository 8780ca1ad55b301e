// Graceful shutdown: answers that never end (server-sent events) are cut at shutdown_timeout, each
// logged as its own request; the listeners stop accepting at once, even while a reload is stuck;
// an admin request that never finishes its body does not hold the exit.
// Real sockets, an in-process Prox; conditions awaited, never slept on.
import assert from "node:assert/strict";
import { freePort, startUpstream, waitFor } from "../_harness.ts";
import { startServer } from "../../src/server.ts";
import { recordingLogger } from "./_ws.ts";
import { readFrom } from "./_raw_client.ts";

Deno.test("shutdown: event streams still open at shutdown_timeout are cut, each logged with its own request id", async () => {
  const enc = new TextEncoder();
  const timers = new Set<ReturnType<typeof setInterval>>();
  await using up = await startUpstream(() => {
    let t: ReturnType<typeof setInterval> | undefined;
    const body = new ReadableStream<Uint8Array>({
      start(c) {
        c.enqueue(enc.encode("data: hello\n\n"));
        t = setInterval(() => c.enqueue(enc.encode("data: tick\n\n")), 50);
        timers.add(t);
      },
      cancel() {
        clearInterval(t);
        if (t !== undefined) timers.delete(t);
      },
    });
    return new Response(body, { headers: { "content-type": "text/event-stream" } });
  });
  const logger = recordingLogger();
  const server = await startServer({
    text: `listen_addr: "127.0.0.1:0"
shutdown_timeout: 300ms
health_check: { enabled: false }
routes:
  "/": { type: proxy, target: "${up.url}" }
`,
    name: "sse.yaml",
  }, { logger, watch: false });
  const clients = [0, 1, 2].map(() => Deno.createHttpClient({}));
  try {
    const streams = await Promise.all(
      clients.map((client) => fetch(`http://127.0.0.1:${server.port}/events`, { client })),
    );
    const reads = streams.map(async (res) => {
      let text = "";
      try {
        for await (const chunk of res.body!) text += new TextDecoder().decode(chunk);
      } catch { /* cut */ }
      return text;
    });
    await server.shutdown();
    for (const text of await Promise.all(reads)) assert.match(text, /^data: hello\n\n/);
    const cut = await waitFor(() => {
      const lines = logger.records.filter((r) => r.msg === "Response body failed");
      return lines.length === 3 ? lines : null;
    }, { what: "three cut streams logged" });
    const ids = cut.map((r) => r.requestId);
    assert.equal(new Set(ids).size, 3, `one request id for several streams: ${ids}`);
  } finally {
    for (const c of clients) c.close();
    for (const t of timers) clearInterval(t);
  }
});

Deno.test("shutdown: the listener stops accepting at once while a reload is stuck reading the config", async () => {
  const dir = await Deno.makeTempDir({ prefix: "prox-stuck-reload-" });
  const file = `${dir}/config.yaml`;
  await Deno.writeTextFile(
    file,
    `listen_addr: "127.0.0.1:0"
shutdown_timeout: 5s
health_check: { enabled: false }
routes:
  "/": { type: redirect, target: "https://example.com" }
`,
  );
  const logger = recordingLogger();
  const server = await startServer({ path: file }, { logger, watch: false });
  // A read that never ends, as on a hung network file system: a FIFO with no writer.
  await Deno.remove(file);
  assert.ok((await new Deno.Command("mkfifo", { args: [file] }).output()).success);
  const reloading = server.reload({ trigger: "SIGHUP" });
  const port = server.port;
  const stopping = server.shutdown();
  try {
    await waitFor(async () => {
      try {
        (await Deno.connect({ hostname: "127.0.0.1", port })).close();
        return false;
      } catch (err) {
        return err instanceof Deno.errors.ConnectionRefused;
      }
    }, { what: "the listener to refuse connections", timeoutMs: 1_500, intervalMs: 10 });
  } finally {
    // Gives the stuck read its end of file, so the reload ends.
    (await Deno.open(file, { write: true })).close();
    await reloading;
    await stopping;
    await Deno.remove(dir, { recursive: true });
  }
  // Shutting down is not a failed config reload.
  assert.ok(
    !logger.records.some((r) => r.msg === "Reload failed; the current config keeps serving"),
  );
});

Deno.test("shutdown: an admin request whose body never finishes does not hold the shutdown past its grace", async () => {
  const adminPort = freePort();
  const server = await startServer({
    text: `listen_addr: "127.0.0.1:0"
shutdown_timeout: 300ms
health_check: { enabled: false }
admin: { listen_addr: "127.0.0.1:${adminPort}" }
routes:
  "/": { type: redirect, target: "https://example.com" }
`,
    name: "admin.yaml",
  }, { logger: recordingLogger(), watch: false });
  // Declares 10 bytes and sends 2: Deno.serve's graceful shutdown waits for the rest.
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: adminPort });
  await conn.write(
    new TextEncoder().encode(
      "POST /config/reload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10\r\n\r\nab",
    ),
  );
  try {
    // Answered (the reload does not read the body), while the rest of the body is still due.
    const answer = new Uint8Array(4096);
    const n = await conn.read(answer);
    assert.match(new TextDecoder().decode(answer.subarray(0, n ?? 0)), /^HTTP\/1\.1 200/);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const stopped = await Promise.race([
      server.shutdown().then(() => true),
      new Promise<false>((r) => timer = setTimeout(() => r(false), 5_000)),
    ]);
    clearTimeout(timer);
    assert.ok(stopped, "shutdown ended within its 300 ms grace (plus slack)");
  } finally {
    conn.close();
    await server.shutdown();
  }
});

for (const engine of ["prox", "deno"]) {
  Deno.test(`shutdown: a keep-alive HTTP/1.1 answer given during the drain says connection: close (http1_engine: ${engine})`, async () => {
    const gate = Promise.withResolvers<void>();
    let arrived = 0;
    await using up = await startUpstream(async () => {
      arrived++;
      await gate.promise;
      return new Response("late");
    });
    const server = await startServer({
      text: `listen_addr: "127.0.0.1:0"
shutdown_timeout: 5s
protocols: { http1_engine: ${engine} }
health_check: { enabled: false }
routes:
  "/": { type: proxy, target: "${up.url}" }
`,
      name: "keepalive.yaml",
    }, { logger: recordingLogger(), watch: false });
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    let stopping: Promise<void> | undefined;
    try {
      // A keep-alive client (HTTP/1.1, no Connection field) with a request in flight.
      await conn.write(new TextEncoder().encode("GET /slow HTTP/1.1\r\nHost: a\r\n\r\n"));
      await waitFor(() => arrived === 1, { what: "the request at the upstream" });
      stopping = server.shutdown();
      // The answer goes out once the drain began: it must tell the client not to send more.
      assert.equal(server.draining(), true);
      gate.resolve();
      const answer = await readFrom(conn, /\r\n\r\nlate$/);
      assert.match(answer, /^HTTP\/1\.1 200 /);
      assert.match(answer, /\r\nconnection: close\r\n/i, answer);
      // And the connection closes after it.
      assert.equal(await readFrom(conn), "");
    } finally {
      gate.resolve();
      conn.close();
      await (stopping ?? server.shutdown());
    }
  });
}
