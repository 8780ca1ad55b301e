// `ip_access` through a real Prox: every route type, HTTP/1.1 (fetch), HTTP/2 (curl), HTTP/3
// (the in-repo client), WebSocket upgrades (ws), client IPs behind trusted proxies, the top-level
// default, the access log and the metric.
import assert from "node:assert/strict";
import { interopTest, ROOT, run, startUpstream, waitFor } from "../_harness.ts";
import { startProxy } from "./_proxy.ts";
import { startServer } from "../../src/server.ts";
import { connect, wsUpstream } from "./_ws.ts";
import { connectH3 } from "../../src/adapters/h3/client.ts";
import { silentLogger } from "../../src/ports.ts";
import type { Logger } from "../../src/ports.ts";

const TLS = `${ROOT}/tests/fixtures/tls`;
const ca = Deno.readTextFileSync(`${TLS}/ca.pem`);

async function get(url: string, xff?: string) {
  const res = await fetch(url, { headers: xff ? { "x-forwarded-for": xff } : {} });
  return {
    status: res.status,
    body: await res.text(),
    proxyStatus: res.headers.get("proxy-status"),
  };
}

function recorder(): { lines: Record<string, unknown>[]; logger: Logger } {
  const lines: Record<string, unknown>[] = [];
  return { lines, logger: { ...silentLogger, info: (m, f) => m === "access" && lines.push(f!) } };
}

Deno.test("ip_access refuses with 403 on every route type, judged on the client IP behind trusted proxies", async () => {
  let reached = 0;
  await using up = await startUpstream(() => (reached++, new Response("ok")));
  await using ws = await wsUpstream();
  const root = await Deno.makeTempDir();
  await Deno.writeTextFile(`${root}/index.html`, "static");
  const { lines, logger } = recorder();
  try {
    await using prox = await startProxy(
      `health_check: { enabled: false }
trusted_proxies: ["127.0.0.1"]
admin: { listen_addr: "127.0.0.1:0" }
routes:
  "/p": { type: proxy, target: "${up.url}", ip_access: { allow: [10.0.0.0/8], deny: [10.0.0.66] } }
  "/lb": { type: load_balance, targets: ["${up.url}"], ip_access: { deny: ["2001:db8::/32"] } }
  "/s": { type: static, root: "${root}", ip_access: { allow: ["::ffff:192.0.2.0/120"] } }
  "/r": { type: redirect, target: "https://example.com", ip_access: { deny: [all] } }
  "/ws": { type: websocket, target: "${ws.url}", ip_access: { allow: [10.1.1.1] } }
`,
      { logger },
    );
    // proxy: allowed block, denied address inside it, outside the block
    assert.deepEqual(await get(`${prox.url}/p`, "10.2.3.4"), {
      status: 200,
      body: "ok",
      proxyStatus: null,
    });
    const denied = await get(`${prox.url}/p`, "10.0.0.66");
    assert.equal(denied.status, 403);
    assert.match(denied.body, /^Forbidden\nrequest id: /);
    assert.equal(denied.proxyStatus, "prox; error=http_request_denied");
    assert.equal((await get(`${prox.url}/p`, "192.0.2.1")).status, 403);
    // The X-Forwarded-For a client sends through a trusted proxy names the client; its own
    // left-most entries do not (the proxy appended the real one last).
    assert.equal((await get(`${prox.url}/p`, "10.0.0.66, 10.9.9.9")).status, 200);
    assert.equal((await get(`${prox.url}/p`, "10.9.9.9, 10.0.0.66")).status, 403);
    // Without X-Forwarded-For the peer (127.0.0.1) is the client: not in 10/8
    assert.equal((await get(`${prox.url}/p`)).status, 403);
    assert.equal(reached, 2);
    // load_balance: IPv6 block denied, IPv4 client allowed
    assert.equal((await get(`${prox.url}/lb`, "2001:db8:5::1")).status, 403);
    assert.equal((await get(`${prox.url}/lb`, "2001:db9::1")).status, 200);
    assert.equal((await get(`${prox.url}/lb`, "192.0.2.1")).status, 200);
    // static: a mapped IPv6 entry matches an IPv4 client, and a mapped client
    assert.deepEqual(await get(`${prox.url}/s/`, "192.0.2.9"), {
      status: 200,
      body: "static",
      proxyStatus: null,
    });
    assert.equal((await get(`${prox.url}/s/`, "::ffff:192.0.2.10")).status, 200);
    assert.equal((await get(`${prox.url}/s/`, "192.0.3.9")).status, 403);
    // redirect: refused before the Location is given
    const r = await fetch(`${prox.url}/r`, { redirect: "manual" });
    assert.equal(r.status, 403);
    assert.equal(r.headers.get("location"), null);
    await r.body?.cancel();
    // websocket: the upgrade is refused; an allowed client gets through
    await assert.rejects(connect(`ws://127.0.0.1:${prox.port}/ws`), { status: 403 });
    const ok = await connect(`ws://127.0.0.1:${prox.port}/ws`, [], {
      headers: { "x-forwarded-for": "10.1.1.1" },
    });
    ok.close();

    await waitFor(() => lines.some((l) => l.path === "/ws" && l.status === 101));
    const refusal = lines.find((l) => l.path === "/r")!;
    assert.equal(refusal.status, 403);
    assert.equal(refusal.error, "http_request_denied");
    assert.equal(refusal.clientIp, "127.0.0.1");
    const metrics = await (await fetch(`http://127.0.0.1:${prox.server.admin!.port}/metrics`))
      .text();
    const count = (route: string) =>
      Number(
        new RegExp(`^prox_access_denied_total\\{route="${route}",reason="ip"\\} (\\d+)$`, "m")
          .exec(metrics)?.[1] ?? 0,
      );
    assert.deepEqual(["/p", "/lb", "/s", "/r", "/ws"].map(count), [4, 1, 1, 1, 1]);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("ip_access at the top level applies to routes without their own and to unmatched paths", async () => {
  await using up = await startUpstream(() => new Response("ok"));
  await using prox = await startProxy(`
health_check: { enabled: false }
trusted_proxies: ["127.0.0.1"]
ip_access: { deny: [203.0.113.0/24] }
routes:
  "/a": { type: proxy, target: "${up.url}" }
  "/b": { type: proxy, target: "${up.url}", ip_access: { allow: [203.0.113.7] } }
  "/c": { type: proxy, target: "${up.url}", ip_access: {} }
`);
  assert.equal((await get(`${prox.url}/a`, "203.0.113.7")).status, 403);
  assert.equal((await get(`${prox.url}/a`, "198.51.100.1")).status, 200);
  // A route's own lists replace the top level's
  assert.equal((await get(`${prox.url}/b`, "203.0.113.7")).status, 200);
  assert.equal((await get(`${prox.url}/b`, "198.51.100.1")).status, 403);
  assert.equal((await get(`${prox.url}/c`, "203.0.113.7")).status, 200);
  // No route: a refused client gets 403, not 404 (it learns nothing of the paths)
  assert.equal((await get(`${prox.url}/nope`, "203.0.113.7")).status, 403);
  assert.equal((await get(`${prox.url}/nope`, "198.51.100.1")).status, 404);
});

Deno.test("ip_access ignores X-Forwarded-For from a peer that is not a trusted proxy", async () => {
  await using up = await startUpstream(() => new Response("ok"));
  await using prox = await startProxy(`
health_check: { enabled: false }
routes:
  "/": { type: proxy, target: "${up.url}", ip_access: { allow: [10.0.0.0/8, "::1"] } }
`);
  assert.equal((await get(`${prox.url}/`, "10.0.0.1")).status, 403);
});

Deno.test("ip_access behind a trusted proxy believes no X-Forwarded-For entry that is no address", async () => {
  await using up = await startUpstream(() => new Response("ok"));
  await using prox = await startProxy(`
trusted_proxies: ["127.0.0.1"]
health_check: { enabled: false }
routes:
  "/":
    type: proxy
    target: "${up.url}"
    ip_access: { allow: [203.0.113.5, 10.0.0.1] }
`);
  assert.equal((await get(`${prox.url}/`, "203.0.113.5:4711")).status, 200);
  // Each was taken for an allowed client: a port of letters, a zone, text after the brackets,
  // 010.0.0.1 (octal 8.0.0.1 to inet_aton). Garbage names no one: the peer is the client.
  for (const xff of ["203.0.113.5:abc", "203.0.113.5%eth0", "[::ffff:203.0.113.5]x", "010.0.0.1"]) {
    const res = await get(`${prox.url}/`, xff);
    assert.equal(res.status, 403, xff);
  }
});

interopTest("ip_access over HTTP/2 (curl) and HTTP/3", ["curl"], async () => {
  await using up = await startUpstream(() => new Response("ok"));
  await using prox = await startProxy(
    `listen_addr: "127.0.0.1:0"
tls: { cert_path: "${TLS}/cert.pem", key_path: "${TLS}/key.pem" }
protocols: { http3_enabled: true }
health_check: { enabled: false }
routes:
  "/in": { type: proxy, target: "${up.url}", ip_access: { allow: [127.0.0.0/8] } }
  "/out": { type: proxy, target: "${up.url}", ip_access: { deny: [127.0.0.1] } }
`,
    { keepListen: true, tls: true },
  );
  const curl = (path: string) =>
    run("curl", [
      "-sS",
      "--http2",
      "--cacert",
      `${TLS}/ca.pem`,
      "-o",
      "/dev/null",
      "-w",
      "%{http_version} %{http_code}",
      "--resolve",
      `localhost:${prox.port}:127.0.0.1`,
      `https://localhost:${prox.port}${path}`,
    ]);
  assert.equal((await curl("/in")).stdout, "2 200");
  assert.equal((await curl("/out")).stdout, "2 403");
  await using h3 = await connectH3({ hostname: "127.0.0.1", port: prox.port, caCerts: [ca] });
  assert.equal((await h3.request("/in")).status, 200);
  const refused = await h3.request("/out");
  assert.equal(refused.status, 403);
  assert.equal(refused.headers.get("proxy-status"), "prox; error=http_request_denied");
});

Deno.test("ip_access at the top level also guards /metrics on the traffic port", async () => {
  await using up = await startUpstream(() => new Response("ok"));
  await using prox = await startProxy(`
health_check: { enabled: false }
trusted_proxies: ["127.0.0.1"]
metrics: { on_main_listener: true }
ip_access: { allow: [10.0.0.0/8] }
routes:
  "/": { type: proxy, target: "${up.url}", ip_access: {} }
`);
  const refused = await get(`${prox.url}/metrics`, "192.0.2.1");
  assert.equal(refused.status, 403);
  assert.equal(refused.proxyStatus, "prox; error=http_request_denied");
  const ok = await get(`${prox.url}/metrics`, "10.0.0.1");
  assert.equal(ok.status, 200);
  assert.match(ok.body, /^# HELP /m);
  // the routes keep their own lists
  assert.equal((await get(`${prox.url}/x`, "192.0.2.1")).status, 200);
});

Deno.test("ip_access deny_file and allow_file: entries from files, reloaded when a file changes (HTTP and tcp)", async () => {
  await using up = await startUpstream(() => new Response("ok"));
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/block.txt`, "# blocklist\n203.0.113.0/24\n127.0.0.1\n");
    await Deno.writeTextFile(`${dir}/office.txt`, "192.0.2.0/24\n");
    await Deno.writeTextFile(
      `${dir}/config.yaml`,
      `listen_addr: "127.0.0.1:0"
health_check: { enabled: false }
routes:
  "/": { type: proxy, target: "${up.url}", ip_access: { deny_file: "${dir}/block.txt" } }
  "/office":
    type: proxy
    target: "${up.url}"
    ip_access: { allow_file: ["${dir}/office.txt"], allow: ["10.0.0.0/8"] }
tcp:
  t: { listen_addr: "127.0.0.1:0", targets: ["${
        up.url.replace("http://", "")
      }"], ip_access: { deny_file: "${dir}/block.txt" } }
`,
    );
    let reloads = 0;
    const server = await startServer({ path: `${dir}/config.yaml` }, {
      logger: silentLogger,
      watchDebounceMs: 20,
      onReload: (r) => void (r.ok && reloads++),
    });
    try {
      const status = async (path: string) => {
        const res = await fetch(`http://127.0.0.1:${server.port}${path}`);
        await res.body?.cancel();
        return res.status;
      };
      // Over tcp: a refused client's connection is closed before anything is relayed.
      const tcpAnswer = async () => {
        const port = server.tcpAddr("t")!.port;
        const c = await Deno.connect({ hostname: "127.0.0.1", port });
        try {
          await c.write(
            new TextEncoder().encode("GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
          );
          return new TextDecoder().decode(await new Response(c.readable).arrayBuffer());
        } catch {
          return "";
        }
      };
      assert.equal(await status("/x"), 403, "127.0.0.1 is in block.txt");
      assert.equal(await status("/office/x"), 403, "127.0.0.1 is in neither allow list");
      assert.equal(await tcpAnswer(), "");
      await Deno.writeTextFile(`${dir}/block.txt`, "203.0.113.0/24\n");
      await Deno.writeTextFile(`${dir}/office.txt`, "192.0.2.0/24\n127.0.0.0/8 # us\n");
      await waitFor(async () => (await status("/office/x")) === 200, {
        what: "both files reloaded",
      });
      assert.equal(await status("/x"), 200);
      assert.match(await tcpAnswer(), /^HTTP\/1\.1 200/);
      assert.ok(reloads >= 1);
    } finally {
      await server.shutdown();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("ip_access list files: a reload that meets a bad line keeps the lists served and names file:line", async () => {
  await using up = await startUpstream(() => new Response("ok"));
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/block.txt`, "127.0.0.1\n");
    await Deno.writeTextFile(
      `${dir}/config.yaml`,
      `listen_addr: "127.0.0.1:0"
health_check: { enabled: false }
routes:
  "/": { type: proxy, target: "${up.url}", ip_access: { deny_file: "${dir}/block.txt" } }
tcp:
  t: { listen_addr: "127.0.0.1:0", targets: ["${
        up.url.replace("http://", "")
      }"], ip_access: { deny_file: "${dir}/block.txt" } }
`,
    );
    const failures: string[] = [];
    const server = await startServer({ path: `${dir}/config.yaml` }, {
      logger: silentLogger,
      watchDebounceMs: 20,
      onReload: (r) => void (!r.ok && failures.push(...r.issues.map((i) => i.message))),
    });
    try {
      const status = async () => {
        const res = await fetch(`http://127.0.0.1:${server.port}/x`);
        await res.body?.cancel();
        return res.status;
      };
      const tcpRefused = async () => {
        const c = await Deno.connect({ hostname: "127.0.0.1", port: server.tcpAddr("t")!.port });
        try {
          await c.write(new TextEncoder().encode("GET / HTTP/1.1\r\nHost: t\r\n\r\n"));
          return (await new Response(c.readable).arrayBuffer()).byteLength === 0;
        } catch {
          return true;
        }
      };
      assert.equal(await status(), 403);
      assert.ok(await tcpRefused());
      // A half-written feed: the entry that would let 127.0.0.1 in is not applied, nor is the
      // removal of 127.0.0.1.
      // Written whole (then renamed over it): the watch never sees an empty file between.
      await Deno.writeTextFile(`${dir}/block.tmp`, "# new\n203.0.113.0/24\n10.0.0.\n");
      await Deno.rename(`${dir}/block.tmp`, `${dir}/block.txt`);
      await waitFor(() => failures.length > 0, { what: "the reload refused" });
      assert.match(failures[0], /block\.txt:3: Invalid address or CIDR block "10\.0\.0\."/);
      assert.equal(await status(), 403, "the old list still serves");
      assert.ok(await tcpRefused());
    } finally {
      await server.shutdown();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
