// The admin listener through a real Prox: metrics after real traffic, status, redacted config,
// reload through the API (accepted and rejected), readiness while draining, access log lines.
import assert from "node:assert/strict";
import http2 from "node:http2";
import { startUpstream, waitFor } from "../_harness.ts";
import { rawExchange, untilRefused } from "./_raw_client.ts";
import { proxyRoute, startProxy } from "./_proxy.ts";
import { startServer } from "../../src/server.ts";
import type { ProxServer } from "../../src/server.ts";
import { silentLogger } from "../../src/ports.ts";
import type { Logger } from "../../src/ports.ts";

const TOKEN = "admin-secret-token";
const auth = { authorization: `Bearer ${TOKEN}` };

function configYaml(upstream: string, extra = ""): string {
  return `listen_addr: "127.0.0.1:0"
admin:
  listen_addr: "127.0.0.1:0"
  token: "${TOKEN}"
health_check: { enabled: false }
routes:
  "/api":
    type: proxy
    target: "${upstream}"
    rate_limit: { by: ip, requests: 100, period: 1m }
${extra}`;
}

async function withProx(
  yaml: string,
  fn: (p: ProxServer, file: string) => Promise<void>,
  logger: Logger = silentLogger,
): Promise<void> {
  const file = await Deno.makeTempFile({ suffix: ".yaml" });
  await Deno.writeTextFile(file, yaml);
  // Reloads here come from the API or reload(), not from the file watcher: on a busy machine its
  // reload of a file a test wrote came after the API's, one more version than the test counts.
  const server = await startServer({ path: file }, { logger, version: "test", watch: false });
  try {
    await fn(server, file);
  } finally {
    await server.shutdown();
    await Deno.remove(file);
  }
}

async function get(url: string, headers: HeadersInit = auth): Promise<Response> {
  return await fetch(url, { headers });
}

Deno.test("admin /metrics counts real traffic by route id, never the raw path", async () => {
  await using up = await startUpstream(() => new Response("hi"));
  await withProx(configYaml(up.url), async (p) => {
    const admin = `http://127.0.0.1:${p.admin!.port}`;
    for (const path of ["/api/a", "/api/b?x=1", "/api/c/d"]) {
      await (await fetch(`http://127.0.0.1:${p.port}${path}`)).text();
    }
    // Not exposed on the traffic port unless configured.
    const onMain = await fetch(`http://127.0.0.1:${p.port}/metrics`);
    assert.equal(onMain.status, 404);
    await onMain.body?.cancel();
    const denied = await get(`${admin}/metrics`, {});
    assert.equal(denied.status, 401);
    await denied.body?.cancel();
    const text = await (await get(`${admin}/metrics`)).text();
    assert.match(text, /^prox_requests_total\{route="\/api",method="GET",status="200"\} 3$/m);
    assert.match(
      text,
      /^prox_request_duration_seconds_bucket\{le="\+Inf",route="\/api",method="GET"\} 3$/m,
    );
    assert.match(
      text,
      new RegExp(
        `^prox_backend_requests_total\\{backend="${up.url}",route="/api",status="200"\\} 3$`,
        "m",
      ),
    );
    // Present from start-up even though health checks are off and nothing changed state.
    assert.match(text, new RegExp(`^prox_backend_health_status\\{backend="${up.url}"\\} 1$`, "m"));
    assert.match(text, /^prox_rate_limit_hits_total\{route="\/api",action="allowed"\} 3$/m);
    assert.match(text, /^prox_config_version 1$/m);
    assert.doesNotMatch(text, /\/api\/a|\/api\/c/);
  });
});

Deno.test("admin /metrics can also be served on the main listener when configured", async () => {
  await using up = await startUpstream(() => new Response("hi"));
  const yaml = configYaml(up.url) + `metrics: { on_main_listener: true, path: "/_prox/metrics" }\n`;
  await withProx(yaml, async (p) => {
    const res = await fetch(`http://127.0.0.1:${p.port}/_prox/metrics`);
    assert.equal(res.status, 200);
    const text = await res.text();
    assert.match(text, /# TYPE prox_requests_total counter/);
    // The traffic port may sit behind a CDN, which would keep a copy (Fastly: an hour) otherwise.
    assert.equal(res.headers.get("cache-control"), "no-store");
    // HEAD gets GET's header fields (RFC 9110 §9.3.2), not whatever the routes answer.
    const head = await fetch(`http://127.0.0.1:${p.port}/_prox/metrics`, { method: "HEAD" });
    assert.equal(head.status, 200);
    assert.equal(head.headers.get("content-type"), res.headers.get("content-type"));
    assert.equal(await head.text(), "");
    // About the GET's length (the exposition changes between scrapes), never 0.
    const length = Number(head.headers.get("content-length"));
    assert.ok(Math.abs(length - new TextEncoder().encode(text).length) < 200, String(length));
  });
});

Deno.test("metrics on the main listener answer the path in any spelling the routes read as it", async () => {
  const seen: string[] = [];
  await using up = await startUpstream((req) => {
    seen.push(new URL(req.url).pathname);
    return new Response("upstream");
  });
  await using prox = await startProxy(`
metrics: { on_main_listener: true, path: "/_prox/metrics" }
${proxyRoute(up.url)}
`);
  // Each went to the "/" route, which reads it as /_prox/metrics: the upstream's own metrics
  // (or whatever it keeps there), reached past the path Prox answers.
  for (
    const target of [
      "//_prox/metrics",
      "/_prox//metrics",
      "/_prox/%6Detrics",
      "/x/../_prox/metrics",
    ]
  ) {
    const res = await rawExchange(
      prox.port,
      `GET ${target} HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n`,
    );
    assert.match(res, /^HTTP\/1\.1 200 /, target);
    assert.match(res, /# TYPE prox_requests_total counter/, target);
  }
  assert.deepEqual(seen, []);
});

Deno.test("admin /status, /config and the reload API reflect the running config", async () => {
  await using up = await startUpstream(() => new Response("hi"));
  await withProx(configYaml(up.url), async (p, file) => {
    const admin = `http://127.0.0.1:${p.admin!.port}`;
    await (await fetch(`http://127.0.0.1:${p.port}/api/x`)).text();
    const s = await (await get(`${admin}/status`)).json();
    assert.equal(s.config.version, 1);
    assert.deepEqual(s.routes.map((r: { id: string }) => r.id), ["/api"]);
    assert.equal(s.upstreams[0].url, up.url);
    assert.deepEqual(s.upstreams[0].routes, ["/api"]);
    assert.equal(s.limiterKeys["/api"], 1);
    assert.equal(s.ready, true);

    const cfg = await (await get(`${admin}/config`)).json();
    assert.equal(cfg.admin.token, "[redacted]");
    assert.equal(cfg.routes["/api"].target, up.url);

    // A broken file is rejected; the old config keeps serving.
    await Deno.writeTextFile(file, configYaml(up.url).replace("type: proxy", "type: proxyy"));
    const bad = await fetch(`${admin}/config/reload`, { method: "POST", headers: auth });
    assert.equal(bad.status, 422);
    const badBody = await bad.json();
    assert.equal(badBody.ok, false);
    assert.ok(badBody.issues.length > 0);
    assert.equal((await fetch(`http://127.0.0.1:${p.port}/api/x`)).status, 200);

    await Deno.writeTextFile(
      file,
      configYaml(up.url, `  "/v2":\n    type: proxy\n    target: "${up.url}"\n`),
    );
    const good = await fetch(`${admin}/config/reload`, { method: "POST", headers: auth });
    assert.equal(good.status, 200);
    const goodBody = await good.json();
    assert.equal(goodBody.version, 2);
    assert.deepEqual(goodBody.changes, [`route "/v2" added (proxy → ${up.url})`]);
    // The history, newest first: this reload, then the rejected one.
    const history = await (await get(`${admin}/config/history`)).json();
    assert.deepEqual(history.map((h: { ok: boolean }) => h.ok), [true, false]);
    assert.deepEqual(history[0].changes, goodBody.changes);
    assert.match(history[1].issues[0].message, /Unknown route type/);
    const s2 = await (await get(`${admin}/status`)).json();
    assert.equal(s2.config.version, 2);
    assert.equal(s2.config.lastReload.ok, true);
    assert.equal(s2.routes.length, 2);
    const m = await (await get(`${admin}/metrics`)).text();
    assert.match(m, /^prox_config_reload_total\{result="success"\} 2$/m);
    assert.match(m, /^prox_config_reload_total\{result="failure"\} 1$/m);
    assert.match(m, /^prox_config_version 2$/m);
  });
});

Deno.test("admin /readyz turns 503 while draining; /healthz stays up without a token", async () => {
  const release = Promise.withResolvers<void>();
  const arrived = Promise.withResolvers<void>();
  await using up = await startUpstream(async () => {
    arrived.resolve();
    await release.promise;
    return new Response("slow");
  });
  const file = await Deno.makeTempFile({ suffix: ".yaml" });
  await Deno.writeTextFile(file, configYaml(up.url));
  const p = await startServer({ path: file }, { logger: silentLogger });
  const admin = `http://127.0.0.1:${p.admin!.port}`;
  try {
    const ready = await fetch(`${admin}/readyz`);
    assert.equal(ready.status, 200);
    await ready.body?.cancel();
    const inflight = fetch(`http://127.0.0.1:${p.port}/api/slow`);
    await arrived.promise;
    const stopping = p.shutdown();
    await waitFor(async () => {
      const r = await fetch(`${admin}/readyz`);
      await r.body?.cancel();
      return r.status === 503;
    }, { what: "readyz 503 while draining" });
    assert.equal(await (await fetch(`${admin}/healthz`)).text(), "ok\n");
    release.resolve();
    assert.equal(await (await inflight).text(), "slow");
    await stopping;
  } finally {
    release.resolve();
    await p.shutdown();
    await Deno.remove(file);
  }
});

Deno.test("admin HEAD answers carry the GET Content-Length, not 0 (RFC 9110 §8.6)", async () => {
  await using up = await startUpstream(() => new Response("hi"));
  await withProx(configYaml(up.url), async (p) => {
    const admin = `http://127.0.0.1:${p.admin!.port}`;
    for (const [path, headers] of [["/healthz", {}], ["/config", auth]] as const) {
      const got = await fetch(`${admin}${path}`, {
        headers: { ...headers, "accept-encoding": "identity" },
      });
      const size = (await got.arrayBuffer()).byteLength;
      const head = await fetch(`${admin}${path}`, {
        method: "HEAD",
        headers: { ...headers, "accept-encoding": "identity" },
      });
      await head.body?.cancel();
      assert.equal(head.status, 200, path);
      assert.equal(head.headers.get("content-length"), String(size), path);
    }
  });
});

Deno.test("access log: one record per request with request id, route, upstream and timing", async () => {
  await using up = await startUpstream(() => new Response("hello"));
  const lines: Record<string, unknown>[] = [];
  const logger: Logger = {
    ...silentLogger,
    info: (msg, f) => msg === "access" && lines.push(f!),
  };
  await withProx(configYaml(up.url), async (p) => {
    const res = await fetch(`http://127.0.0.1:${p.port}/api/x?q=1`, {
      headers: { "user-agent": "t/1" },
    });
    await res.text();
    const miss = await fetch(`http://127.0.0.1:${p.port}/nope`);
    const missBody = await miss.text();
    const head = await fetch(`http://127.0.0.1:${p.port}/api/h`, { method: "HEAD" });
    await head.body?.cancel();
    assert.equal(head.headers.get("content-length"), "5");
    // Records are written once each response has been delivered.
    await waitFor(() => lines.length === 3, { what: "three access records" });
    assert.equal(lines.find((l) => l.method === "HEAD")?.bytesOut, 0);
    assert.equal(lines.find((l) => l.path === "/api/x")?.bytesOut, 5);
    const a = lines.find((l) => l.path === "/api/x")!;
    const b = lines.find((l) => l.path === "/nope")!;
    assert.match(String(a.requestId), /^[\w.:@-]{8,}$/);
    assert.equal(a.method, "GET");
    assert.equal(a.path, "/api/x");
    assert.equal(a.status, 200);
    assert.equal(a.route, "/api");
    assert.equal(a.upstream, up.url);
    assert.equal(a.upstreamStatus, 200);
    assert.equal(a.userAgent, "t/1");
    assert.equal(a.protocol, "http/1.1");
    assert.ok(typeof a.durationMs === "number" && a.durationMs >= 0);
    assert.equal(b.status, 404);
    assert.equal(b.route, null);
    assert.notEqual(a.requestId, b.requestId);
    assert.ok(missBody.includes(String(b.requestId)), missBody);
  }, logger);
});

Deno.test("access log: a streamed body is counted and timed to its end; a client that leaves is marked", async () => {
  const tick = 150;
  await using up = await startUpstream((req) => {
    const n = new URL(req.url).pathname === "/api/long" ? 50 : 3;
    let i = 0;
    // Chunked (no Content-Length): 3 chunks of 1,000 bytes, one every `tick` ms.
    return new Response(
      new ReadableStream<Uint8Array>({
        async pull(ctl) {
          if (i++ === n) return ctl.close();
          await new Promise((r) => setTimeout(r, tick));
          ctl.enqueue(new Uint8Array(1000));
        },
      }),
    );
  });
  const lines: Record<string, unknown>[] = [];
  const logger: Logger = { ...silentLogger, info: (msg, f) => msg === "access" && lines.push(f!) };
  await withProx(configYaml(up.url), async (p) => {
    const res = await fetch(`http://127.0.0.1:${p.port}/api/stream`);
    assert.equal(res.headers.get("content-length"), null);
    assert.equal((await res.arrayBuffer()).byteLength, 3000);
    const done = await waitFor(() => lines.find((l) => l.path === "/api/stream"), {
      what: "the access record of the streamed response",
    });
    assert.equal(done.bytesOut, 3000);
    assert.ok(Number(done.durationMs) >= 3 * tick - 20, `durationMs ${done.durationMs}`);
    assert.ok(Number(done.upstreamMs) < Number(done.durationMs), "head came before the body");
    assert.equal(done.incomplete, undefined);

    // The client reads two chunks of fifty and leaves.
    const ac = new AbortController();
    const long = await fetch(`http://127.0.0.1:${p.port}/api/long`, { signal: ac.signal });
    const reader = long.body!.getReader();
    let got = 0;
    while (got < 2000) got += (await reader.read()).value!.byteLength;
    ac.abort();
    await reader.cancel().catch(() => {});
    const cut = await waitFor(() => lines.find((l) => l.path === "/api/long"), {
      timeoutMs: 20 * tick,
      what: "the access record of the abandoned response",
    });
    assert.equal(cut.incomplete, true);
    assert.ok(Number(cut.bytesOut) >= 2000 && Number(cut.bytesOut) < 50_000, `${cut.bytesOut}`);
  }, logger);
});

Deno.test("admin /status and metrics show a target marked down by health checks, with the reason", async () => {
  await using up = await startUpstream(() => new Response("ok"));
  const dead = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const deadUrl = `http://127.0.0.1:${(dead.addr as Deno.NetAddr).port}`;
  dead.close();
  const yaml = `listen_addr: "127.0.0.1:0"
admin: { listen_addr: "127.0.0.1:0" }
health_check: { enabled: true, interval_secs: 1, timeout_secs: 1, path: "/", unhealthy_threshold: 1 }
routes:
  "/lb":
    type: load_balance
    targets: ["${up.url}", "${deadUrl}"]
`;
  await withProx(yaml, async (p) => {
    const admin = `http://127.0.0.1:${p.admin!.port}`;
    const down = await waitFor(async () => {
      const s = await (await fetch(`${admin}/status`)).json();
      return s.upstreams.find((u: { url: string; healthy: boolean }) =>
        u.url === deadUrl && u.healthy === false
      );
    }, { what: "the dead target to be reported down" });
    assert.match(down.reason, /failed probe\(s\): Cannot connect to upstream/);
    assert.equal(typeof down.since, "number");
    const m = await (await fetch(`${admin}/metrics`)).text();
    assert.match(m, new RegExp(`^prox_backend_health_status\\{backend="${deadUrl}"\\} 0$`, "m"));
    assert.match(m, new RegExp(`^prox_backend_health_status\\{backend="${up.url}"\\} 1$`, "m"));
  });
});

Deno.test("prox_active_connections counts a request in progress and drops back to 0", async () => {
  const release = Promise.withResolvers<void>();
  const arrived = Promise.withResolvers<void>();
  await using up = await startUpstream(async () => {
    arrived.resolve();
    await release.promise;
    return new Response("slow");
  });
  await withProx(configYaml(up.url), async (p) => {
    const admin = `http://127.0.0.1:${p.admin!.port}`;
    const active = async () => {
      const m = await (await get(`${admin}/metrics`)).text();
      return /^prox_active_connections\{protocol="http\/1\.1"\} (\d+)$/m.exec(m)?.[1];
    };
    assert.equal(await active(), "0");
    const inflight = fetch(`http://127.0.0.1:${p.port}/api/slow`);
    await arrived.promise;
    assert.equal(await active(), "1");
    release.resolve();
    assert.equal(await (await inflight).text(), "slow");
    await waitFor(async () => (await active()) === "0", { what: "active back to 0" });
  });
});

Deno.test("a reload moves the admin listener to its new address", async () => {
  await using up = await startUpstream(() => new Response("ok"));
  // Both addresses take a port from the kernel (a port picked free and bound later may be taken
  // in between); another loopback address makes the second differ from the first.
  const yaml = (host: string) =>
    configYaml(up.url).replace(
      'listen_addr: "127.0.0.1:0"\n  token',
      `listen_addr: "${host}:0"\n  token`,
    );
  await withProx(yaml("127.0.0.1"), async (p, file) => {
    const a = p.admin!.port;
    await Deno.writeTextFile(file, yaml("127.0.0.2"));
    const r = await fetch(`http://127.0.0.1:${a}/config/reload`, { method: "POST", headers: auth });
    assert.equal(r.status, 200);
    await r.body?.cancel();
    const b = p.admin!.port;
    assert.equal(await (await get(`http://127.0.0.2:${b}/healthz`)).text(), "ok\n");
    // Refused on a new connection (a pooled keep-alive one would not tell).
    await untilRefused(a);
  });
});

Deno.test("certificate expiry (metrics and /status) follows the served certificate across reloads", async () => {
  const tls = new URL("../fixtures/tls/", import.meta.url).pathname;
  const dir = await Deno.makeTempDir();
  await Deno.copyFile(`${tls}cert.pem`, `${dir}/new.pem`);
  const withTls = (cert: string) =>
    `tls: { cert_path: "${cert}", key_path: "${tls}key.pem" }\n${configYaml("http://127.0.0.1:9")}`;
  const served = async (admin: string) => {
    const m = await (await get(`${admin}/metrics`)).text();
    const series = m.split("\n").filter((l) => l.startsWith("prox_tls_certificate_expiry"));
    const status = await (await get(`${admin}/status`)).json();
    return {
      series: series.map((l) => /name="([^"]*)"/.exec(l)![1]),
      status: status.certificates.map((c: { name: string }) => c.name),
    };
  };
  try {
    await withProx(withTls(`${tls}cert.pem`), async (p, file) => {
      const admin = `http://127.0.0.1:${p.admin!.port}`;
      assert.deepEqual(await served(admin), {
        series: [`${tls}cert.pem`],
        status: [`${tls}cert.pem`],
      });
      // A renamed certificate replaces the old one: its series would keep expiry alerts firing.
      await Deno.writeTextFile(file, withTls(`${dir}/new.pem`));
      assert.ok((await p.reload()).ok);
      assert.deepEqual(await served(admin), {
        series: [`${dir}/new.pem`],
        status: [`${dir}/new.pem`],
      });
      await Deno.writeTextFile(file, configYaml("http://127.0.0.1:9"));
      assert.ok((await p.reload()).ok);
      assert.deepEqual(await served(admin), { series: [], status: [] });
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** One HTTP/2 request without TLS (prior knowledge, as `curl --http2-prior-knowledge`). */
function h2cRequest(
  origin: string,
  headers: Record<string, string>,
): Promise<{ status: number; body: string }> {
  const session = http2.connect(origin);
  return new Promise<{ status: number; body: string }>((resolve, reject) => {
    const req = session.request(headers);
    let status = 0;
    let body = "";
    req.setEncoding("utf8");
    req.on("response", (h) => status = Number(h[":status"]));
    req.on("data", (c: string) => body += c);
    req.on("end", () => resolve({ status, body }));
    req.on("error", reject);
    req.end();
  }).finally(() => session.close());
}

Deno.test("admin over HTTP/2: :authority stands for Host (loopback without a token, same-origin POST)", async () => {
  await using up = await startUpstream(() => new Response("hi"));
  // Without a token: a loopback listener checks the host the request names (DNS rebinding).
  const open = configYaml(up.url).replace(`  token: "${TOKEN}"\n`, "");
  await withProx(open, async (p) => {
    const origin = `http://127.0.0.1:${p.admin!.port}`;
    const res = await h2cRequest(origin, { ":method": "GET", ":path": "/status" });
    assert.equal(res.status, 200, res.body);
    // A name DNS could rebind is still refused.
    const named = await h2cRequest(origin, {
      ":method": "GET",
      ":path": "/status",
      ":authority": "rebind.example:9090",
    });
    assert.equal(named.status, 403);
  });
  await withProx(configYaml(up.url), async (p) => {
    const origin = `http://127.0.0.1:${p.admin!.port}`;
    const post = (from: string) =>
      h2cRequest(origin, {
        ":method": "POST",
        ":path": "/config/reload",
        origin: from,
        ...auth,
      });
    assert.equal((await post(origin)).status, 200);
    assert.equal((await post("https://evil.example")).status, 403);
  });
});
