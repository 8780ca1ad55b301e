// Tracing with Deno's OpenTelemetry (OTEL_DENO=true): an upstream reached over Prox's own HTTP/1.1
// client gets Prox's server span as its parent, and the spans reach an OTLP receiver.
import assert from "node:assert/strict";
import * as http2 from "node:http2";
import { ROOT, startUpstream, waitFor } from "../_harness.ts";
import { freePort, spawnProx } from "./_process.ts";
import { startProxy } from "./_proxy.ts";
import { otelEnabled } from "../../src/adapters/otel.ts";

const TRACE = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN = "00f067aa0ba902b7";
const incoming = { traceparent: `00-${TRACE}-${CLIENT_SPAN}-01`, tracestate: "vendor=1" };

/** An upstream that keeps the trace fields of every request. */
async function tracedUpstream() {
  const seen: { traceparent: string | null; tracestate: string | null }[] = [];
  const up = await startUpstream((req) => {
    // Health checks come too: only the test's requests count.
    if (new URL(req.url).pathname !== "/a") return new Response("ok");
    seen.push({
      traceparent: req.headers.get("traceparent"),
      tracestate: req.headers.get("tracestate"),
    });
    return new Response("ok");
  });
  return { up, seen };
}

/** An OTLP/HTTP collector that keeps the body of every traces export. */
async function startCollector() {
  const exported: Uint8Array[] = [];
  const server = await startUpstream(async (req) => {
    if (new URL(req.url).pathname === "/v1/traces") exported.push(await req.bytes());
    return new Response(null, { status: 200 });
  });
  const bytes = (hex: string) => Uint8Array.from(hex.match(/../g)!.map((h) => parseInt(h, 16)));
  const holds = (body: Uint8Array, part: Uint8Array) =>
    body.some((_, i) => part.every((b, j) => body[i + j] === b));
  return Object.assign(server, {
    /** The exports so far, as text (protobuf strings are readable in it). */
    text: () => exported.map((b) => new TextDecoder().decode(b)).join(""),
    /** True once one export holds every id (hex) as its raw bytes, as OTLP protobuf sends it. */
    holdsIds: (...ids: string[]) => exported.some((b) => ids.every((id) => holds(b, bytes(id)))),
  });
}

/** A config that serves `/` from `target`, with `extra` keys before the routes. */
const proxyTo = (target: string, extra = "") =>
  `listen_addr: "127.0.0.1:{PORT}"\n${extra}routes: { "/": { type: proxy, target: "${target}" } }\n`;

const NO_HEALTH_CHECK = "health_check: { enabled: false }\n";
const PROXY_PROTOCOL = `accept_proxy_protocol: { from: ["127.0.0.1/32"] }\n`;

/** Starts Prox as a child process with Deno's tracing on, exporting to `collector`. */
function spawnTraced(yaml: string, collector: string, env: Record<string, string> = {}) {
  return spawnProx(yaml, {
    env: { OTEL_DENO: "true", OTEL_EXPORTER_OTLP_ENDPOINT: collector, ...env },
  });
}

/**
 * Asserts that `traceparent` continues the client's trace (TRACE, sampled) with a new parent,
 * not the client's span; returns that parent's id (Prox's server span).
 */
function proxParent(traceparent: unknown): string {
  const m = /^00-([0-9a-f]{32})-([0-9a-f]{16})-01$/.exec(String(traceparent ?? ""));
  assert.ok(m, `traceparent ${traceparent}`);
  assert.equal(m[1], TRACE);
  assert.notEqual(m[2], CLIENT_SPAN);
  return m[2];
}

/** Sends `request` (HTTP/1.1) behind a PROXY protocol v1 header from 192.0.2.7; the whole answer. */
async function viaBalancer(port: number, request: string): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await conn.write(
    new TextEncoder().encode(`PROXY TCP4 192.0.2.7 127.0.0.1 40000 ${port}\r\n${request}`),
  );
  return new TextDecoder().decode(await new Response(conn.readable).bytes());
}

Deno.test("tracing off: the client's trace context reaches the upstream as it came", async () => {
  const { up, seen } = await tracedUpstream();
  await using _up = up;
  await using prox = await startProxy(`routes: { "/": { type: proxy, target: "${up.url}" } }`);
  await (await fetch(`${prox.url}/a`, { headers: incoming })).text();
  assert.deepEqual(seen, [incoming]);
});

Deno.test("OTEL_DENO=true: the upstream's parent is Prox's span, and the spans are exported", async () => {
  await using otlp = await startCollector();
  const { up, seen } = await tracedUpstream();
  await using _up = up;
  await using prox = await spawnTraced(proxyTo(up.url), otlp.url, {
    OTEL_SERVICE_NAME: "prox-test",
    OTEL_BSP_SCHEDULE_DELAY: "200",
  });
  const res = await fetch(`http://127.0.0.1:${prox.port}/a`, { headers: incoming });
  assert.equal(await res.text(), "ok");
  assert.equal(seen.length, 1);
  // One context, not the client's plus Prox's: same trace, a new parent (Prox's server span).
  const span = proxParent(seen[0].traceparent);
  // The client's tracestate goes on with its trace (W3C Trace Context §3.3: "MUST send it"), once.
  assert.equal(seen[0].tracestate, "vendor=1");
  // An invalid traceparent (version ff) starts a new trace, and its tracestate goes with it.
  const bad = { traceparent: `ff-${TRACE}-${CLIENT_SPAN}-01`, tracestate: "vendor=2" };
  await (await fetch(`http://127.0.0.1:${prox.port}/a`, { headers: bad })).text();
  assert.equal(seen.length, 2);
  assert.match(seen[1].traceparent ?? "", /^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
  assert.ok(!seen[1].traceparent?.includes(TRACE), `traceparent ${seen[1].traceparent}`);
  assert.equal(seen[1].tracestate, null);
  // The span Prox made is exported with that trace id (OTLP protobuf: the 16 raw bytes).
  await waitFor(
    () => otlp.holdsIds(TRACE, span),
    { timeoutMs: 20_000, what: "an OTLP export holding Prox's span" },
  );
});

Deno.test("otelEnabled agrees with Deno on which OTEL_DENO values turn tracing on", async () => {
  // Deno's own answer: with tracing on, fetch sends a traceparent of its client span.
  const dir = await Deno.makeTempDir({ prefix: "prox-otel-" });
  const script = `${dir}/probe.ts`;
  await Deno.writeTextFile(
    script,
    `const s = Deno.serve({ port: 0, onListen() {} }, (r) => new Response(String(r.headers.has("traceparent"))));
const res = await fetch("http://127.0.0.1:" + s.addr.port + "/");
console.log(await res.text());
await s.shutdown();
`,
  );
  try {
    for (const value of ["true", "TRUE", "1", "yes", "false", "0"]) {
      const out = await new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", script],
        // Spans go nowhere: port 9 (discard) refuses.
        env: { OTEL_DENO: value, OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:9" },
        stderr: "null",
      }).output();
      const deno = new TextDecoder().decode(out.stdout).trim() === "true";
      // "1" made Prox think tracing was on while Deno's was off: the client's trace context was
      // dropped on HTTP/2 upstreams, and the HTTP/1.1 engine turned off for nothing.
      assert.equal(otelEnabled(() => value), deno, `OTEL_DENO=${value}`);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("OTEL_DENO=true: an h2c upstream (Prox's own HTTP/2 client) gets Prox's span as parent", async () => {
  const seen: { traceparent: unknown; tracestate: unknown }[] = [];
  const server = http2.createServer();
  server.on("stream", (stream: http2.ServerHttp2Stream, headers) => {
    if (headers[":path"] === "/a") {
      seen.push({ traceparent: headers.traceparent, tracestate: headers.tracestate });
    }
    stream.respond({ ":status": 200 });
    stream.end("ok");
  });
  const port = await new Promise<number>((resolve) =>
    server.listen(0, "127.0.0.1", () => resolve((server.address() as { port: number }).port))
  );
  try {
    await using otlp = await startCollector();
    await using prox = await spawnTraced(
      `listen_addr: "127.0.0.1:{PORT}"
routes:
  "/": { type: proxy, target: "http://127.0.0.1:${port}", upstream_protocol: h2c }
`,
      otlp.url,
    );
    const res = await fetch(`http://127.0.0.1:${prox.port}/a`, { headers: incoming });
    assert.equal(await res.text(), "ok");
    assert.equal(seen.length, 1);
    // The client's span as the parent would hang the upstream's spans beside Prox's.
    proxParent(seen[0].traceparent);
  } finally {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
});

Deno.test("OTEL_DENO=true: a WebSocket upstream's handshake gets Prox's span as parent", async () => {
  const seen: (string | null)[] = [];
  await using up = await startUpstream((req) => {
    if (req.headers.get("upgrade")?.toLowerCase() !== "websocket") return new Response("ok");
    seen.push(req.headers.get("traceparent"));
    const { socket, response } = Deno.upgradeWebSocket(req);
    socket.onmessage = (e) => socket.send(e.data);
    return response;
  });
  await using otlp = await startCollector();
  await using prox = await spawnTraced(proxyTo(up.url), otlp.url);
  const ws = new WebSocket(`ws://127.0.0.1:${prox.port}/ws`, { headers: incoming });
  const echoed = await new Promise<string>((resolve, reject) => {
    ws.onopen = () => ws.send("hi");
    ws.onmessage = (e) => resolve(String(e.data));
    ws.onerror = () => reject(new Error("WebSocket failed"));
  });
  const closed = new Promise((resolve) => ws.onclose = resolve);
  ws.close();
  await closed;
  assert.equal(echoed, "hi");
  assert.equal(seen.length, 1);
  // The handshake is an HTTP/1.1 request like the others: Prox's span, not the client's.
  proxParent(seen[0]);
});

Deno.test("OTEL_DENO=true: an HTTP/2 upstream reached through fetch keeps the client's tracestate", async () => {
  const TLS = `${ROOT}/tests/fixtures/tls`;
  const seen: { traceparent: string | null; tracestate: string | null }[] = [];
  await using up = Deno.serve({
    port: 0,
    hostname: "127.0.0.1",
    cert: Deno.readTextFileSync(`${TLS}/cert.pem`),
    key: Deno.readTextFileSync(`${TLS}/key.pem`),
    onListen() {},
  }, (req) => {
    if (new URL(req.url).pathname === "/a") {
      seen.push({
        traceparent: req.headers.get("traceparent"),
        tracestate: req.headers.get("tracestate"),
      });
    }
    return new Response("ok");
  });
  await using otlp = await startCollector();
  await using prox = await spawnTraced(proxyTo(`https://127.0.0.1:${up.addr.port}`), otlp.url, {
    DENO_CERT: `${TLS}/ca.pem`,
  });
  // Headers fetch would otherwise add: Prox then sends this request over fetch (upstream_h2.ts).
  const headers = {
    ...incoming,
    "user-agent": "t",
    accept: "*/*",
    "accept-language": "en",
    "accept-encoding": "identity",
  };
  for (let i = 0; i < 3; i++) {
    const res = await fetch(`http://127.0.0.1:${prox.port}/a`, { headers });
    assert.equal(await res.text(), "ok");
  }
  assert.equal(seen.length, 3);
  for (const s of seen) {
    proxParent(s.traceparent);
    // W3C Trace Context §3.3: the tracestate goes on with its trace.
    assert.equal(s.tracestate, "vendor=1");
  }
});

Deno.test("OTEL_DENO=true: an HTTP/3 request gets a server span, the upstream's parent", async () => {
  if (!("QuicEndpoint" in Deno)) return;
  const TLS = `${ROOT}/tests/fixtures/tls`;
  await using otlp = await startCollector();
  const { up, seen } = await tracedUpstream();
  await using _up = up;
  await using prox = await spawnTraced(
    proxyTo(
      up.url,
      `tls: { cert_path: "${TLS}/cert.pem", key_path: "${TLS}/key.pem" }\n` +
        `protocols: { http3_enabled: true }\n${NO_HEALTH_CHECK}`,
    ),
    otlp.url,
    { OTEL_BSP_SCHEDULE_DELAY: "200" },
  );
  const ca = Deno.readTextFileSync(`${TLS}/ca.pem`);
  const { connectH3 } = await import("../../src/adapters/h3/client.ts");
  let res: { status: number } | null = null;
  // HTTP/3 comes up beside the TCP listener: retried until it answers.
  await waitFor(async () => {
    try {
      await using h3 = await connectH3({ hostname: "127.0.0.1", port: prox.port, caCerts: [ca] });
      res = await h3.request("/a", { headers: incoming });
      return true;
    } catch {
      return false;
    }
  }, { timeoutMs: 10_000, what: "an HTTP/3 answer" });
  assert.equal(res!.status, 200);
  assert.equal(seen.length, 1);
  const span = proxParent(seen[0].traceparent);
  assert.equal(seen[0].tracestate, "vendor=1");
  await waitFor(() => otlp.holdsIds(span), {
    timeoutMs: 20_000,
    what: "an OTLP export holding Prox's HTTP/3 span",
  });
});

Deno.test("OTEL_DENO=true: a request behind a PROXY protocol balancer gets a server span", async () => {
  const { up, seen } = await tracedUpstream();
  await using _up = up;
  await using otlp = await startCollector();
  await using prox = await spawnTraced(proxyTo(up.url, PROXY_PROTOCOL + NO_HEALTH_CHECK), otlp.url);
  // The readiness probe of spawnProx sent no header: that connection is simply closed.
  const answer = await viaBalancer(
    prox.port,
    `GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n` +
      `traceparent: ${incoming.traceparent}\r\ntracestate: ${incoming.tracestate}\r\n\r\n`,
  );
  assert.match(answer, /^HTTP\/1\.1 200/);
  assert.equal(seen.length, 1);
  proxParent(seen[0].traceparent);
  assert.equal(seen[0].tracestate, "vendor=1");
});

Deno.test("OTEL_DENO=true: Prox's own server span records url.full with the query's credentials redacted", async () => {
  await using otlp = await startCollector();
  const { up } = await tracedUpstream();
  await using _up = up;
  await using prox = await spawnTraced(
    proxyTo(up.url, PROXY_PROTOCOL + NO_HEALTH_CHECK),
    otlp.url,
    { OTEL_BSP_SCHEDULE_DELAY: "200" },
  );
  assert.match(
    await viaBalancer(
      prox.port,
      `GET /a?page=2&access_token=SECRET-TOKEN-42 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`,
    ),
    /^HTTP\/1\.1 200/,
  );
  await waitFor(() => otlp.text().includes("/a?page=2&access_token=REDACTED"), {
    timeoutMs: 20_000,
    what: "an OTLP export holding the span's url.full",
  });
  assert.ok(!otlp.text().includes("SECRET-TOKEN-42"));
});

Deno.test("OTEL_DENO=true: a collector that does not answer is said once in the log", async () => {
  // Deno's exporter drops spans it cannot send without a word: an operator saw no trace and
  // nothing in the log. Now one warning names the endpoint (requests are served as before).
  const { up } = await tracedUpstream();
  await using _up = up;
  const closed = freePort();
  await using prox = await spawnTraced(
    proxyTo(up.url, NO_HEALTH_CHECK),
    `http://127.0.0.1:${closed}`,
  );
  const res = await fetch(`http://127.0.0.1:${prox.port}/a`);
  assert.equal(await res.text(), "ok");
  await waitFor(() => prox.output().includes("Cannot reach the OpenTelemetry collector"), {
    timeoutMs: 10_000,
    what: "the warning about the collector",
  });
  const line = prox.output().split("\n").find((l) => l.includes("OpenTelemetry collector"))!;
  assert.match(line, new RegExp(`http://127\\.0\\.0\\.1:${closed}/v1/traces`));
  assert.equal(prox.output().split("Cannot reach the OpenTelemetry collector").length, 2);
});

Deno.test("OTEL_DENO=true: W3C traceparent rules, and the client's sampled flag followed upstream", async () => {
  // Trace Context §3.2: a traceparent that does not parse starts a new trace (and its tracestate
  // is not used); a later version is read as 00 with its extra fields ignored.
  const { up, seen } = await tracedUpstream();
  await using _up = up;
  await using otlp = await startCollector();
  await using prox = await spawnTraced(proxyTo(up.url, NO_HEALTH_CHECK), otlp.url, {
    OTEL_TRACES_SAMPLER: "parentbased_always_on",
  });
  const cases: [string, "continued" | "new", string][] = [
    [`00-${TRACE}-${CLIENT_SPAN}-01`, "continued", "01"],
    [`00-${TRACE}-${CLIENT_SPAN}-00`, "continued", "00"],
    [`00-${TRACE.toUpperCase()}-${CLIENT_SPAN}-01`, "new", "01"],
    [`00-${"0".repeat(32)}-${CLIENT_SPAN}-01`, "new", "01"],
    [`00-${TRACE}-${"0".repeat(16)}-01`, "new", "01"],
    [`ff-${TRACE}-${CLIENT_SPAN}-01`, "new", "01"],
    [`00-${TRACE}-${CLIENT_SPAN}-01-extra`, "new", "01"],
    [`00-${TRACE}-${CLIENT_SPAN}-1`, "new", "01"],
    [`01-${TRACE}-${CLIENT_SPAN}-01-future-fields`, "continued", "01"],
    [`cc-${TRACE}-${CLIENT_SPAN}-08`, "continued", "00"],
  ];
  for (const [traceparent, how, flags] of cases) {
    await (await fetch(`http://127.0.0.1:${prox.port}/a`, {
      headers: { traceparent, tracestate: "vendor=1" },
    })).text();
    const got = seen.at(-1)!;
    const m = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/.exec(got.traceparent ?? "");
    assert.ok(m, `${traceparent}: sent ${got.traceparent}`);
    assert.equal(m[1] === TRACE, how === "continued", `${traceparent}: sent ${got.traceparent}`);
    assert.notEqual(m[2], CLIENT_SPAN);
    assert.equal(m[3], flags, `${traceparent}: sent ${got.traceparent}`);
    assert.equal(got.tracestate, how === "continued" ? "vendor=1" : null, traceparent);
  }
});

Deno.test("OTEL_DENO=true: a server span is named after the route that took the request (http.route)", async () => {
  await using otlp = await startCollector();
  const { up } = await tracedUpstream();
  await using _up = up;
  await using prox = await spawnTraced(
    `listen_addr: "127.0.0.1:{PORT}"
health_check: { enabled: false }
routes:
  "/shop-route": { type: proxy, target: "${up.url}" }
  "/": { type: proxy, target: "${up.url}" }
`,
    otlp.url,
    { OTEL_BSP_SCHEDULE_DELAY: "200" },
  );
  // Span names were the method alone: every request of every route one group in a backend.
  await (await fetch(`http://127.0.0.1:${prox.port}/shop-route/item/12345`)).text();
  await waitFor(() => otlp.text().includes("/shop-route/item/12345"), {
    timeoutMs: 20_000,
    what: "an OTLP export holding the server span",
  });
  assert.ok(otlp.text().includes("GET /shop-route"), "span name");
  assert.ok(otlp.text().includes("http.route"), "http.route attribute");
});
