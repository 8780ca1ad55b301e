// Conditional routes (`match`, keys `/api#name`): a request's method, headers and query choose
// between routes of one prefix, through a real Prox to real upstreams; a match that does not hold
// falls to the unconditional route of the prefix, or to a shorter prefix; `prox explain` says why.
import assert from "node:assert/strict";
import { startUpstream } from "../_harness.ts";
import { startProxy } from "./_proxy.ts";
import { buildSnapshot } from "../../src/proxy/snapshot.ts";
import { loadConfigText } from "../../src/config/load.ts";
import { explainRequest } from "../../src/proxy/explain.ts";
import { silentLogger } from "../../src/ports.ts";
import type { FileStore } from "../../src/ports.ts";

const config = (up: Record<string, string>) => `
health_check: { enabled: false }
metrics: { on_main_listener: true }
routes:
  /:
    type: proxy
    target: "${up.fallback}"
  /api:
    type: proxy
    target: "${up.v1}"
  "/api#canary":
    type: proxy
    target: "${up.v2}"
    match: { has_header: { name: X-Canary, value_matches: "^1$" } }
  "/api#writes":
    type: proxy
    target: "${up.writes}"
    match: { method_is: [POST, PUT, DELETE] }
  "example.com/api#host":
    type: proxy
    target: "${up.host}"
    match: { query_has: host }
  "/ip#far":
    type: proxy
    target: "${up.writes}"
    match: { client_ip: ["10.0.0.0/8", "2001:db8::/32"] }
  "/ip#near":
    type: proxy
    target: "${up.host}"
    match: { client_ip: 127.0.0.1 }
  "/beta#q":
    type: proxy
    target: "${up.v2}"
    match:
      - { query_has: { name: beta, value_matches: "^(1|true)$" } }
      - { method_is: GET }
`;

Deno.test("match: method, header and query choose between routes of one prefix", async () => {
  const names = ["fallback", "v1", "v2", "writes", "host"];
  const ups = await Promise.all(
    names.map((name) =>
      startUpstream((req) => Response.json({ name, path: new URL(req.url).pathname }))
    ),
  );
  try {
    const url = Object.fromEntries(names.map((n, i) => [n, ups[i].url]));
    await using prox = await startProxy(config(url));
    using client = Deno.createHttpClient({ allowHost: true });
    const to = async (path: string, init: RequestInit = {}) => {
      const res = await fetch(`${prox.url}${path}`, { ...init, client });
      assert.equal(res.status, 200, path);
      return (await res.json()).name as string;
    };
    assert.equal(await to("/api/x"), "v1");
    assert.equal(await to("/api/x", { headers: { "x-canary": "1" } }), "v2");
    assert.equal(await to("/api/x", { headers: { "x-canary": "0" } }), "v1");
    assert.equal(await to("/api/x", { method: "POST", body: "b" }), "writes");
    // Both hold: the first written of them takes it.
    assert.equal(
      await to("/api/x", { method: "POST", body: "b", headers: { "x-canary": "1" } }),
      "v2",
    );
    // A host rank above: example.com's conditional route, when its match holds.
    assert.equal(await to("/api/x?host", { headers: { host: "example.com" } }), "host");
    assert.equal(await to("/api/x?host", { headers: { host: "other.test" } }), "v1");
    assert.equal(await to("/api/x", { headers: { host: "example.com" } }), "v1");
    // The client's address: this test's is 127.0.0.1.
    assert.equal(await to("/ip/x"), "host");
    // A list must all hold; else a shorter prefix takes the request.
    assert.equal(await to("/beta/x?beta=1"), "v2");
    assert.equal(await to("/beta/x?beta=0"), "fallback");
    assert.equal(await to("/beta/x?beta=1", { method: "POST", body: "b" }), "fallback");
    // The route's prefix (without its name) is stripped as any route's.
    const res = await fetch(`${prox.url}/api/deep/path`, { headers: { "x-canary": "1" } });
    assert.equal((await res.json()).path, "/deep/path");
    // Metrics and logs name the route by its key.
    const metrics = await (await fetch(`${prox.url}/metrics`)).text();
    assert.match(metrics, /prox_requests_total\{[^}]*route="\/api#canary"/);
  } finally {
    for (const u of ups) await u[Symbol.asyncDispose]();
  }
});

Deno.test("match: prox explain names the route chosen and why the others lost", async () => {
  const url = {
    fallback: "http://f",
    v1: "http://v1",
    v2: "http://v2",
    writes: "http://w",
    host: "http://h",
  };
  const loaded = loadConfigText(`listen_addr: "127.0.0.1:1"\n${config(url)}`, {
    file: "c.yaml",
    env: { exists: () => true },
  });
  assert.deepEqual(loaded.issues.filter((i) => i.severity === "error"), []);
  const snapshot = buildSnapshot(loaded.config!, { version: 1 });
  const files: FileStore = {
    stat: () => Promise.resolve(null),
    open: () => Promise.resolve(new Uint8Array()),
  };
  const ex = await explainRequest(
    { method: "GET", url: "http://a.test/api/x", headers: [["x-canary", "1"]] },
    { snapshot, files, clock: { now: () => 0, monotonic: () => 0 }, logger: silentLogger },
  );
  const verdict = Object.fromEntries(ex.routes.map((r) => [r.key, r]));
  assert.equal(verdict["/api#canary"].matched, true);
  assert.match(verdict["/api#canary"].reason, /its match holds/);
  assert.match(verdict["/api#writes"].reason, /its match does not hold/);
  assert.equal(verdict["/api"].matched, false);
});

Deno.test("validate: #names need match, match looks at the request only", () => {
  const issues = (routes: string) =>
    loadConfigText(`listen_addr: "127.0.0.1:3000"\nroutes:\n${routes}`, {
      file: "c.yaml",
      env: { exists: () => true },
    }).issues.map((i) => `${i.severity}: ${i.message}`);
  assert.deepEqual(
    issues(
      '  /a: { type: static, root: . }\n  "/a#b": { type: static, root: ., match: { method_is: GET } }\n',
    ),
    [],
  );
  assert.match(
    issues('  "/a#b": { type: static, root: . }\n').join(),
    /has a name after "#" but no match/,
  );
  assert.match(
    issues('  "/a#b c": { type: static, root: ., match: { method_is: GET } }\n').join(),
    /the name after "#" may hold letters/,
  );
  assert.match(
    issues('  "/a#b": { type: static, root: ., match: { status_is: 404 } }\n').join(),
    /status_is cannot choose a route: there is no response yet/,
  );
  assert.match(
    issues('  "/a#b": { type: static, root: ., match: { client_ip: [10.0.0.0/8, 10.0.0.0/33] } }\n')
      .join(),
    /Invalid address or CIDR block "10\.0\.0\.0\/33"/,
  );
  assert.match(
    issues(
      '  "/a#b": { type: static, root: ., match: [{ has_header: { name: X, value_matches: "(" } }] }\n',
    )
      .join(),
    /Invalid regular expression/,
  );
  // Two unconditional routes on one prefix still clash.
  assert.match(
    issues('  /a: { type: static, root: . }\n  "/a/": { type: static, root: . }\n').join(),
    /match the same requests/,
  );
  // A conditional route after one of its prefix and hosts with the same match never takes a
  // request (the first written wins): a copy left unchanged.
  const twin = (name: string, hosts = "") =>
    `  "/a#${name}": { type: static, root: ., match: { method_is: GET }${hosts} }\n`;
  assert.deepEqual(issues(twin("b") + twin("c")), [
    'warning: Route "/a#c" never takes a request: "/a#b" comes first with the same match',
  ]);
  assert.deepEqual(issues(twin("b") + twin("c", ", hosts: [example.com]")), []);
});
