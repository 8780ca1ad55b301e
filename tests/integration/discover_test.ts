// `discover` on load_balance routes: the A records of a name are the targets, followed as DNS
// changes, with a real DNS server (pebble-challtestsrv) and upstreams on several loopback
// addresses sharing one port, as replicas of a service behind one name do.
import assert from "node:assert/strict";
import { interopTest, startUpstream, waitFor } from "../_harness.ts";
import { startProxy } from "./_proxy.ts";
import { startDnsmasq, startMockDns } from "./_dns.ts";
import { recordingLogger } from "./_ws.ts";
import { loadConfigText } from "../../src/config/load.ts";
import { startServer } from "../../src/server.ts";
import { withTempDir } from "./_acme.ts";

/** Upstreams on 127.0.0.2 and 127.0.0.3 with one port, answering their address and Host. */
function replicas(addresses = ["127.0.0.2", "127.0.0.3"]) {
  for (let attempt = 0;; attempt++) {
    const servers: Deno.HttpServer[] = [];
    try {
      let port = 0;
      for (const hostname of addresses) {
        const s = Deno.serve(
          { hostname, port, onListen: () => {} },
          (req) => new Response(`${hostname} ${req.headers.get("host")}`),
        );
        servers.push(s);
        port = s.addr.port;
      }
      return {
        port,
        async [Symbol.asyncDispose]() {
          await Promise.all(servers.map((s) => s.shutdown()));
        },
      };
    } catch (err) {
      // The port the first got is taken on another address: try another.
      for (const s of servers) void s.shutdown();
      if (attempt === 5 || !(err instanceof Deno.errors.AddrInUse)) throw err;
    }
  }
}

const config = (dns: string, port: number, extra = "") => `
health_check: { enabled: false }
routes:
  /:
    type: load_balance
    discover: { dns: "http://app.test:${port}", refresh: 1s, resolver: "${dns}" }
${extra}`;

/**
 * Most tests' set-up: a mock DNS answering app.test with `addresses`, the two replicas, and a Prox
 * discovering them with `config` (after `edit`), its log kept in `logger`. Dispose stops all three.
 */
async function discovering(addresses: string[], edit = (yaml: string) => yaml) {
  await using stack = new AsyncDisposableStack();
  const dns = stack.use(await startMockDns());
  const up = stack.use(replicas());
  await dns.setA("app.test", addresses);
  const logger = recordingLogger();
  const prox = stack.use(await startProxy(edit(config(dns.server, up.port)), { logger }));
  const all = stack.move();
  return { dns, up, logger, prox, [Symbol.asyncDispose]: () => all.disposeAsync() };
}

/** Who answered `n` requests, as a sorted set of "address host" lines. */
async function answers(url: string, n = 6): Promise<string[]> {
  const seen = new Set<string>();
  for (let i = 0; i < n; i++) {
    const res = await fetch(url);
    seen.add(`${res.status} ${await res.text()}`);
  }
  return [...seen].sort();
}

interopTest("discover: the name's addresses are the targets, followed as DNS changes", [
  "pebble-challtestsrv",
], async () => {
  await using setup = await discovering(["127.0.0.2"]);
  const { dns, up, logger, prox } = setup;
  // Found before the first request; the upstream gets the name as Host.
  assert.deepEqual(await answers(prox.url), [`200 127.0.0.2 app.test:${up.port}`]);
  // A second replica: both get requests after the next lookup (round robin).
  await dns.setA("app.test", ["127.0.0.2", "127.0.0.3"]);
  await waitFor(async () => (await answers(prox.url)).length === 2, { what: "both replicas" });
  assert.deepEqual(await answers(prox.url), [
    `200 127.0.0.2 app.test:${up.port}`,
    `200 127.0.0.3 app.test:${up.port}`,
  ]);
  // The first one gone from DNS: no more requests for it.
  await dns.setA("app.test", ["127.0.0.3"]);
  await waitFor(
    async () => (await answers(prox.url)).join() === `200 127.0.0.3 app.test:${up.port}`,
    {
      what: "only 127.0.0.3",
    },
  );
  const changed = logger.records.filter((r) => r.msg === "Discovered targets changed");
  assert.deepEqual(changed.map((r) => [r.added, r.removed]), [
    [["127.0.0.2"], []],
    [["127.0.0.3"], []],
    [[], ["127.0.0.2"]],
  ]);
  // No address at all (NXDOMAIN): Deno's resolver reports SERVFAIL alike, so the route keeps
  // what it had (logged), and health checks judge those addresses.
  await dns.setA("app.test", []);
  await waitFor(
    () => logger.records.find((r) => String(r.msg).startsWith("DNS lookup for discover failed")),
    { what: "a lookup without addresses" },
  );
  assert.equal(changed.length, 3);
  assert.deepEqual(await answers(prox.url), [`200 127.0.0.3 app.test:${up.port}`]);
  await dns.setA("app.test", ["127.0.0.2"]);
  await waitFor(async () => (await fetch(prox.url).then((r) => r.text())).startsWith("127.0.0.2"));
});

interopTest(
  "discover: a name without addresses from the start has no target: 503 with Retry-After",
  [
    "pebble-challtestsrv",
  ],
  async () => {
    await using dns = await startMockDns();
    await using up = replicas(["127.0.0.2"]);
    await using prox = await startProxy(
      config(dns.server, up.port).replace("refresh: 1s", "refresh: 30s"),
    );
    const res = await fetch(prox.url);
    await res.body?.cancel();
    assert.equal(res.status, 503);
    // Looked up again every 2 s until it has addresses (not every refresh): Retry-After says so.
    assert.equal(res.headers.get("retry-after"), "2");
    await dns.setA("app.test", ["127.0.0.2"]);
    await waitFor(async () =>
      (await fetch(prox.url).then((r) => r.text())).startsWith("127.0.0.2")
    );
  },
);

interopTest("discover: a DNS server that stops answering leaves the targets as they were", [
  "pebble-challtestsrv",
], async () => {
  await using setup = await discovering(["127.0.0.2", "127.0.0.3"]);
  const { dns, logger, prox } = setup;
  await dns.stop();
  await waitFor(
    () =>
      logger.records.find((r) =>
        r.msg === "DNS lookup for discover failed; the route keeps the targets it had"
      ),
    { what: "a failed lookup" },
  );
  assert.deepEqual((await answers(prox.url)).map((a) => a.split(" ")[1]), [
    "127.0.0.2",
    "127.0.0.3",
  ]);
  // Logged once, not at every refresh.
  const failures = () =>
    logger.records.filter((r) => String(r.msg).startsWith("DNS lookup for discover failed"));
  assert.equal(failures().length, 1);
  assert.equal(failures()[0].targets, 2);
});

interopTest("discover: a DNS server answering SERVFAIL leaves the targets as they were", [
  "pebble-challtestsrv",
], async () => {
  // Deno's resolver reports SERVFAIL (and REFUSED) as it reports NXDOMAIN, "no records found": a
  // resolver's bad minute emptied every discover route (503 for all) until it answered again.
  await using setup = await discovering(["127.0.0.2", "127.0.0.3"]);
  const { dns, logger, prox } = setup;
  const changes = () => logger.records.filter((r) => r.msg === "Discovered targets changed");
  const before = changes().length;
  await dns.setServfail("app.test", true);
  // The next lookup (refresh 1 s) either fails, as it should, or changes the targets.
  await waitFor(
    () =>
      changes().length > before ||
      logger.records.find((r) => String(r.msg).startsWith("DNS lookup for discover failed")),
    { what: "a lookup answered SERVFAIL" },
  );
  assert.deepEqual(changes().slice(before).map((r) => r.removed), [], "targets changed");
  assert.deepEqual((await answers(prox.url)).map((a) => a.split(" ").slice(0, 2).join(" ")), [
    "200 127.0.0.2",
    "200 127.0.0.3",
  ]);
  await dns.setServfail("app.test", false);
  await waitFor(
    () => logger.records.find((r) => r.msg === "DNS lookup for discover answers again"),
    { what: "answers again" },
  );
});

interopTest("discover: a reload keeps the addresses found (no request without a target)", [
  "pebble-challtestsrv",
], async () => {
  await using dns = await startMockDns();
  await using up = replicas(["127.0.0.2"]);
  await dns.setA("app.test", ["127.0.0.2"]);
  await withTempDir(async (dir) => {
    const path = `${dir}/prox.yaml`;
    const text = `listen_addr: "127.0.0.1:0"\n${config(dns.server, up.port)}`;
    await Deno.writeTextFile(path, text);
    const server = await startServer({ path }, { watch: false, logger: recordingLogger() });
    try {
      const url = `http://127.0.0.1:${server.port}`;
      assert.equal((await fetch(url).then((r) => r.text())).split(" ")[0], "127.0.0.2");
      await Deno.writeTextFile(path, text + `  /other: { type: static, root: "${dir}" }\n`);
      const r = await server.reload();
      assert.ok(r.ok, JSON.stringify(r));
      // At once after the swap, without waiting for a lookup.
      const res = await fetch(url);
      assert.equal(res.status, 200);
      assert.equal((await res.text()).split(" ")[0], "127.0.0.2");
      // A changed discover (another name) is looked up before the swap.
      await dns.setA("api.test", ["127.0.0.2"]);
      await Deno.writeTextFile(path, text.replace("app.test", "api.test"));
      assert.ok((await server.reload()).ok);
      assert.equal(
        await fetch(url).then((r) => r.text()),
        `127.0.0.2 api.test:${up.port}`,
      );
    } finally {
      await server.shutdown();
    }
  });
});

interopTest(
  "discover srv: each record's host at its port, weighted, higher priorities as backups",
  [
    "dnsmasq",
  ],
  async () => {
    await using a = await startUpstream((req) => new Response(`a ${req.headers.get("host")}`));
    await using b = await startUpstream((req) => new Response(`b ${req.headers.get("host")}`));
    await using c = await startUpstream((req) => new Response(`c ${req.headers.get("host")}`));
    const port = (u: string) => new URL(u).port;
    await using dns = await startDnsmasq({
      srv: [
        `_http._tcp.app.test,ha.test,${port(a.url)},0,10`,
        `_http._tcp.app.test,hb.test,${port(b.url)},0,30`,
        `_http._tcp.app.test,hc.test,${port(c.url)},5,10`,
      ],
      hosts: ["ha.test,127.0.0.1", "hb.test,127.0.0.1", "hc.test,127.0.0.1"],
    });
    await using prox = await startProxy(`
health_check: { enabled: false }
routes:
  /:
    type: load_balance
    strategy: weighted_round_robin
    discover: { srv: "_http._tcp.app.test", resolver: "${dns.server}" }
`);
    const route = prox.server.snapshot().config.routes["/"];
    assert.deepEqual(
      route.type === "load_balance" && route.targets,
      [
        { url: `http://127.0.0.1:${port(a.url)}`, weight: 10, backup: false },
        { url: `http://127.0.0.1:${port(b.url)}`, weight: 30, backup: false },
        { url: `http://127.0.0.1:${port(c.url)}`, weight: 10, backup: true },
      ].sort((x, y) => Number(port(x.url)) - Number(port(y.url))),
    );
    // Weighted 1:3 over the primaries; the backup idle while they are up; Host is the service.
    const counts = new Map<string, number>();
    for (let i = 0; i < 8; i++) {
      const body = await fetch(prox.url).then((r) => r.text());
      counts.set(body, (counts.get(body) ?? 0) + 1);
    }
    assert.deepEqual([...counts].sort(), [["a app.test", 2], ["b app.test", 6]]);
  },
);

Deno.test("validate: SRV weights warn under the strategies that ignore them (round_robin, the default, and first)", () => {
  // Discovered targets are not validated: an SRV record's weight 30 beside one of 10 was taken
  // as a share under weighted_round_robin and silently dropped under the default strategy.
  const warnings = (route: string) =>
    loadConfigText(
      `listen_addr: "127.0.0.1:3000"\nroutes:\n  /: { type: load_balance, ${route} }\n`,
      { file: "c.yaml", env: { exists: () => true } },
    ).issues.filter((i) => i.severity === "warning").map((i) => `${i.path}: ${i.message}`);
  const srv = 'discover: { srv: "_http._tcp.app.service.consul" }';
  assert.deepEqual(warnings(srv), [
    "routes./.discover.srv: The SRV records' weights have no effect with strategy round_robin: " +
    "each available target takes its turn (their priorities still make backups)",
  ]);
  assert.match(warnings(`strategy: first, ${srv}`).join(), /no effect with strategy first/);
  for (const s of ["weighted_round_robin", "random", "least_connections", "power_of_two"]) {
    assert.deepEqual(warnings(`strategy: ${s}, ${srv}`), [], s);
  }
  // Addresses of a dns name carry no weights.
  assert.deepEqual(warnings('discover: { dns: "http://app:8080" }'), []);
});

Deno.test("validate: discover or targets, a host name, a resolver address, refresh ≥ 1s", () => {
  const issues = (route: string) =>
    loadConfigText(
      `listen_addr: "127.0.0.1:3000"\nroutes:\n  /: { type: load_balance, ${route} }\n`,
      {
        file: "c.yaml",
        env: { exists: () => true },
      },
    ).issues.filter((i) => i.severity === "error").map((i) =>
      `${i.line}:${i.col} ${i.path}: ${i.message}`
    );
  assert.deepEqual(issues('discover: { dns: "http://app:8080" }'), []);
  assert.match(
    issues("strategy: random").join(),
    /routes\.\/\.targets: Load balance routes must have at least one target/,
  );
  assert.match(
    issues('targets: ["http://a"], discover: { dns: "http://app" }').join(),
    /routes\.\/\.discover: A route takes its targets from targets or from discover, not both/,
  );
  assert.match(
    issues('discover: { dns: "http://10.0.0.1:80" }').join(),
    /names the address 10\.0\.0\.1/,
  );
  assert.match(issues('discover: { dns: "http://[::1]:80" }').join(), /names the address/);
  assert.match(issues('discover: { dns: "unix:/run/a.sock" }').join(), /discover\.dns is an http/);
  assert.match(
    issues('discover: { dns: "http://app", resolver: "dns.google" }').join(),
    /Invalid resolver/,
  );
  assert.deepEqual(issues('discover: { dns: "http://app", resolver: "[fd00::53]:5353" }'), []);
  assert.deepEqual(issues('discover: { dns: "http://app", resolver: "10.0.0.2" }'), []);
  assert.match(issues('discover: { dns: "http://app", refresh: 100ms }').join(), /at least 1s/);
  assert.match(issues('discover: { dns: "http://u:p@app" }').join(), /credentials/);
  assert.deepEqual(issues('discover: { srv: "_http._tcp.app.service.consul", scheme: https }'), []);
  assert.match(
    issues('discover: { srv: "app.service.consul" }').join(),
    /discover\.srv is an SRV name/,
  );
  assert.match(issues("discover: { refresh: 5s }").join(), /discover needs dns .* or srv/);
  assert.match(
    issues('discover: { dns: "http://a", srv: "_h._tcp.a" }').join(),
    /dns or srv, not both/,
  );
});

interopTest("discover: a WebSocket upgrade names the service as Host, not the address", [
  "pebble-challtestsrv",
], async () => {
  await using dns = await startMockDns();
  await dns.setA("app.test", ["127.0.0.2"]);
  const up = Deno.serve({ hostname: "127.0.0.2", port: 0, onListen: () => {} }, (req) => {
    const host = req.headers.get("host") ?? "";
    const { socket, response } = Deno.upgradeWebSocket(req);
    socket.onopen = () => socket.send(host);
    return response;
  });
  try {
    await using prox = await startProxy(config(dns.server, up.addr.port));
    const ws = new WebSocket(prox.url.replace(/^http/, "ws"));
    const first = await new Promise<string>((resolve, reject) => {
      ws.onmessage = (e) => resolve(String(e.data));
      ws.onerror = () => reject(new Error("WebSocket failed"));
    });
    const closed = new Promise((r) => ws.onclose = r);
    ws.close();
    await closed;
    assert.equal(first, `app.test:${up.addr.port}`);
  } finally {
    await up.shutdown();
  }
});

interopTest("discover: IPv6 addresses behind a CNAME, bracketed, with the name as Host", [
  "pebble-challtestsrv",
], async () => {
  await using dns = await startMockDns();
  const up = Deno.serve(
    { hostname: "::1", port: 0, onListen: () => {} },
    (req) => new Response(`v6 ${req.headers.get("host")}`),
  );
  try {
    await dns.setCname("app.test", "real.test");
    await dns.setAAAA("real.test", ["::1"]);
    await using prox = await startProxy(`
health_check: { enabled: false }
routes:
  /:
    type: load_balance
    discover: { dns: "http://app.test:${up.addr.port}", refresh: 1s, resolver: "${dns.server}" }
`);
    const route = prox.server.snapshot().config.routes["/"];
    assert.deepEqual(route.type === "load_balance" && route.targets, [
      `http://[::1]:${up.addr.port}`,
    ]);
    const res = await fetch(prox.url);
    assert.equal(await res.text(), `v6 app.test:${up.addr.port}`);
  } finally {
    await up.shutdown();
  }
});

interopTest("discover: a drained target that leaves DNS and comes back is drained still", [
  "pebble-challtestsrv",
], async () => {
  await using setup = await discovering(
    ["127.0.0.2", "127.0.0.3"],
    (yaml) => yaml + `admin: { listen_addr: "127.0.0.1:0" }\n`,
  );
  const { dns, up, logger, prox } = setup;
  const admin = `http://127.0.0.1:${prox.server.admin!.port}`;
  const target = `http://127.0.0.2:${up.port}`;
  const res = await fetch(`${admin}/upstreams/drain?target=${target}`, { method: "POST" });
  assert.equal(res.status, 200, await res.text());
  const only3 = [`200 127.0.0.3 app.test:${up.port}`];
  assert.deepEqual(await answers(prox.url), only3);
  // Gone from DNS, then back (a flap): it must not take requests again unasked.
  await dns.setA("app.test", ["127.0.0.3"]);
  const left = await waitFor(
    () =>
      logger.records.findIndex((r) =>
        r.msg === "A drained target left the DNS answer: drained again if it comes back" &&
        r.target === target
      ) + 1,
    { what: "the drained target gone from DNS" },
  );
  await dns.setA("app.test", ["127.0.0.2", "127.0.0.3"]);
  await waitFor(
    () =>
      logger.records.slice(left).some((r) =>
        r.msg === "Discovered targets changed" && (r.added as string[]).includes("127.0.0.2")
      ),
    { what: "127.0.0.2 found again" },
  );
  assert.deepEqual(await answers(prox.url, 12), only3);
  // /status says so.
  const status = JSON.stringify(await fetch(`${admin}/status`).then((r) => r.json()));
  assert.match(status, new RegExp(`"${target}"[^}]*"drained":true`));
  // Undrained through the admin API, it takes requests again.
  const back = await fetch(`${admin}/upstreams/undrain?target=${target}`, { method: "POST" });
  assert.equal(back.status, 200, await back.text());
  await waitFor(async () => (await answers(prox.url)).length === 2, { what: "both replicas" });
});

interopTest("discover: hold keeps an address a target for its duration after answers dropped it", [
  "pebble-challtestsrv",
], async () => {
  await using setup = await discovering(
    ["127.0.0.2"],
    (yaml) => yaml.replace("refresh: 1s", "refresh: 1s, hold: 4s"),
  );
  const { dns, logger, prox } = setup;
  const changes = () => logger.records.filter((r) => r.msg === "Discovered targets changed");
  // A DNS answering one of two addresses at a time (as Route 53 multivalue answers do): held,
  // both stay targets.
  await dns.setA("app.test", ["127.0.0.3"]);
  await waitFor(async () => (await answers(prox.url)).length === 2, { what: "both replicas" });
  assert.deepEqual(changes().map((r) => [r.added, r.removed]), [
    [["127.0.0.2"], []],
    [["127.0.0.3"], []],
  ]);
  // Replaced by another address: each stays until `hold` has passed since an answer last held
  // it (127.0.0.2 first: the answers dropped it before 127.0.0.3).
  const since = Date.now();
  await dns.setA("app.test", ["127.0.0.4"]);
  await waitFor(() => changes().length === 5, { what: "both gone after hold", timeoutMs: 15_000 });
  assert.deepEqual(changes().slice(2).map((r) => [r.added, r.removed]), [
    [["127.0.0.4"], []],
    [[], ["127.0.0.2"]],
    [[], ["127.0.0.3"]],
  ]);
  assert.ok(Date.now() - since >= 3_000, `removed after ${Date.now() - since} ms, hold is 4 s`);
  // Nobody listens there.
  const res = await fetch(prox.url);
  await res.body?.cancel();
  assert.equal(res.status, 502);
});
