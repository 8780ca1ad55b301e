import assert from "node:assert/strict";
import { loadConfigText } from "../config/load.ts";
import { buildSnapshot } from "./snapshot.ts";
import { explainRequest } from "./explain.ts";
import type { ExplainRequest } from "./explain.ts";
import { createUpstreamRegistry } from "./state.ts";
import { healthCheckKey, stickyPolicy } from "./pool.ts";
import { noopMetrics, silentLogger } from "../ports.ts";
import type { FileStore } from "../ports.ts";

const clock = { now: () => 1_700_000_000_000, monotonic: () => 0 };

/** A file store with one file: /srv/www/app.js. */
const files: FileStore = {
  stat: (root, rel) =>
    Promise.resolve(
      root === "/srv/www" && rel === "app.js"
        ? { isFile: true, isDirectory: false, size: 3, mtime: 0 }
        : null,
    ),
  open: () => Promise.resolve(new Uint8Array([1, 2, 3])),
};

function explainer(yaml: string, vars: Record<string, string> = {}) {
  const env = (name: string) => vars[name];
  const { config, issues } = loadConfigText(`listen_addr: "127.0.0.1:0"\n${yaml}`, {
    file: "t.yaml",
    env: { exists: () => true, env },
  });
  assert.ok(config, JSON.stringify(issues));
  const snapshot = buildSnapshot(config, { version: 1, env });
  return (req: ExplainRequest, registry?: ReturnType<typeof createUpstreamRegistry>) =>
    explainRequest(req, { snapshot, files, clock, logger: silentLogger, registry });
}

const API = `
routes:
  "/api":
    type: load_balance
    strategy: round_robin
    targets: ["http://10.0.0.1:8080", "http://10.0.0.2:8080/base"]
    path_rewrite: /v2
    request_headers:
      add: { X-Env: prod }
      remove: [Cookie]
    response_headers:
      add: { X-Frame-Options: DENY }
    rate_limit: { requests: 10, period: 1s, by: header, header_name: X-Api-Key }
  "api.example.com/api":
    type: proxy
    target: http://127.0.0.1:9000
  "/old":
    type: redirect
    target: https://new.example.com/
    status_code: 301
  "/assets":
    type: static
    root: /srv/www
    compress: { algorithms: [gzip], min_length: 100 }
    bandwidth: { rate: 512KiB, after: 10MiB, per: client }
`;

Deno.test("explainRequest names the longest prefix and why every other route lost", async () => {
  const e = await explainer(API)({ method: "GET", url: "http://example.com/api/users?x=1" });
  assert.equal(e.route, "/api");
  const why = Object.fromEntries(e.routes.map((r) => [r.key, r.reason]));
  assert.match(why["api.example.com/api"], /host example\.com is not one of api\.example\.com/);
  assert.match(why["/old"], /prefix \/old does not match path \/api\/users/);
  const exact = await explainer(API)({
    method: "GET",
    url: "http://127.0.0.1:8000/api/x",
    headers: [["Host", "api.example.com"]],
  });
  assert.equal(exact.route, "api.example.com/api");
  assert.match(
    exact.routes.find((r) => r.key === "/api")!.reason,
    /exact host of api\.example\.com\/api beats any host/,
  );
});

Deno.test("explainRequest gives the upstream URL, the pick and the header diff", async () => {
  const e = await explainer(API)({
    method: "POST",
    url: "http://example.com/api/users?x=1",
    headers: [["Cookie", "a=b"], ["X-Api-Key", "k1"]],
    clientIp: "198.51.100.4",
  });
  assert.equal(e.upstream?.url, "http://10.0.0.1:8080/v2/users?x=1");
  assert.equal(e.upstream?.pick, "http://10.0.0.1:8080");
  assert.deepEqual(e.upstream?.targets.map((t) => t.available), [null, null]);
  const h = e.requestHeaders!;
  assert.deepEqual(h.removed, ["cookie"]);
  assert.deepEqual(h.changed, [["host", "example.com", "10.0.0.1:8080"]]);
  const added = Object.fromEntries(h.added);
  assert.equal(added["x-forwarded-for"], "198.51.100.4");
  assert.equal(added["x-env"], "prod");
  assert.equal(added["via"], "1.1 prox");
  assert.deepEqual(e.responseRules, ["set X-Frame-Options: DENY"]);
  assert.deepEqual(e.rateLimits.map((l) => [l.by, l.key]), [["header", "h:k1"]]);
});

Deno.test("explainRequest lists both keys a query parameter sent twice counts against", async () => {
  const e = await explainer(`routes:
  "/": { type: redirect, target: "/x", rate_limit: { by: query, query_param: k, requests: 1, period: 1s } }
`)({ method: "GET", url: "http://example.com/?k=a&k=b" });
  assert.deepEqual(e.rateLimits.map((l) => [l.key, l.keys]), [["q:a", ["q:a", "q:b"]]]);
});

Deno.test("explainRequest uses live health: a target marked down is not picked", async () => {
  const reg = createUpstreamRegistry({ clock, logger: silentLogger, metrics: noopMetrics });
  const { config } = loadConfigText(`listen_addr: "127.0.0.1:0"\n${API}`, {
    file: "t.yaml",
    env: { exists: () => true },
  });
  const route = config!.routes["/api"];
  assert.ok(route.type === "load_balance");
  // Down by the route's own check (the default one: /health).
  reg.probe("http://10.0.0.1:8080", false, {
    check: healthCheckKey(config!, { route, target: "http://10.0.0.1:8080" })!,
    thresholds: { healthy: 1, unhealthy: 1 },
    reason: "test",
  });
  // Down only by another route's check (another health path): up for this route.
  reg.probe("http://10.0.0.2:8080/base", false, {
    check: "another route's check",
    thresholds: { healthy: 1, unhealthy: 1 },
    reason: "test",
  });
  const e = await explainer(API)({ method: "GET", url: "http://example.com/api/a" }, reg);
  assert.deepEqual(e.upstream?.targets.map((t) => t.available), [false, true]);
  assert.equal(e.upstream?.pick, "http://10.0.0.2:8080/base");
  assert.equal(e.upstream?.url, "http://10.0.0.2:8080/base/v2/a");
});

Deno.test("explainRequest answers redirects, static files and misses as Prox would", async () => {
  const ex = explainer(API);
  const r = await ex({ method: "GET", url: "http://x/old/page?q=1" });
  assert.deepEqual(r.answer, { status: 301, location: "https://new.example.com/page?q=1" });
  const s = await ex({ method: "GET", url: "http://x/assets/app.js" });
  assert.deepEqual(s.answer, { status: 200, file: "/srv/www/app.js" });
  assert.ok(s.notes.some((n) => n.includes("100 bytes or more") && n.includes("(gzip,")));
  assert.ok(
    s.notes.some((n) =>
      n.startsWith(
        "bandwidth: each answer's body goes to the client at most 512 KiB/s after the first 10 MiB (shared by the client's answers",
      )
    ),
    JSON.stringify(s.notes),
  );
  const gone = await ex({ method: "GET", url: "http://x/assets/none.js" });
  assert.equal(gone.answer?.status, 404);
  const none = await ex({ method: "GET", url: "http://x/nothing" });
  assert.equal(none.route, null);
  assert.equal(none.answer?.status, 404);
  assert.ok(none.routes.every((v) => !v.matched));
  const trace = await ex({ method: "TRACE", url: "http://x/api" });
  assert.equal(trace.answer?.status, 405);
  const bad = await ex({ method: "GET", url: "http://x/api/%2e%2e/%2e%2e/etc" });
  assert.equal(bad.action, "error");
  // As the pipeline: a path parameter that would change the route is refused (was "/api" here).
  const param = await ex({ method: "GET", url: "http://x/old;x/page" });
  assert.equal(param.route, null);
  assert.equal(param.answer?.status, 400);
});

Deno.test("explainRequest keys consistent_hash and reports a WebSocket upstream", async () => {
  const ex = explainer(`
routes:
  "/h":
    type: load_balance
    strategy: consistent_hash
    hash_on: { type: header, name: X-User }
    targets: ["http://10.0.0.1:1", "http://10.0.0.2:1", "http://10.0.0.3:1"]
  "/ws":
    type: websocket
    target: http://127.0.0.1:7000/socket
`);
  const a = await ex({ method: "GET", url: "http://x/h", headers: [["X-User", "alice"]] });
  const again = await ex({ method: "GET", url: "http://x/h", headers: [["X-User", "alice"]] });
  assert.equal(a.upstream?.pick, again.upstream?.pick);
  assert.ok(a.notes.some((n) => n.includes("Hash key (header): alice")));
  const ws = await ex({
    method: "GET",
    url: "http://x/ws/chat",
    headers: [["Upgrade", "websocket"], ["Connection", "Upgrade"]],
  });
  assert.equal(ws.upstream?.url, "ws://127.0.0.1:7000/socket/chat");
  assert.equal(ws.upstream?.websocket, true);
});

Deno.test("explainRequest follows a sticky cookie as the live pick does", async () => {
  const explain = explainer(`
routes:
  "/": { type: load_balance, targets: ["http://10.0.0.1", "http://10.0.0.2"], sticky: true }
`);
  const fresh = await explain({ method: "GET", url: "http://x/a" });
  assert.equal(fresh.upstream?.pick, "http://10.0.0.1");
  assert.match(fresh.notes.join("\n"), /No valid sticky cookie prox_sticky/);
  // The value Prox would set for the second target (route id and target URL, hashed).
  const second = stickyPolicy("/", ["http://10.0.0.1", "http://10.0.0.2"], true)!.values[1];
  const kept = await explain({
    method: "GET",
    url: "http://x/a",
    headers: [["cookie", `a=1; prox_sticky=${second}`]],
  });
  assert.equal(kept.upstream?.pick, "http://10.0.0.2");
  assert.equal(kept.upstream?.pickReason, "sticky cookie");
});

Deno.test("explainRequest notes where a route mirrors the request to", async () => {
  const explain = explainer(`
routes:
  "/api":
    type: proxy
    target: "http://10.0.0.1:8080"
    path_rewrite: /v2
    mirror: { target: ["http://10.0.9.1:8080", "https://shadow.internal/base"], percent: 5 }
`);
  const e = await explain({ method: "POST", url: "http://h/api/orders?x=1" });
  assert.ok(
    e.notes.includes(
      "Mirrored: 5% of requests are copied to http://10.0.9.1:8080/v2/orders?x=1, " +
        "https://shadow.internal/base/v2/orders?x=1 (answer dropped)",
    ),
    JSON.stringify(e.notes),
  );
  const ws = await explain({
    method: "GET",
    url: "http://h/api/live",
    headers: [
      ["upgrade", "websocket"],
      ["connection", "upgrade"],
      ["sec-websocket-version", "13"],
      [
        "sec-websocket-key",
        "dGhlIHNhbXBsZSBub25jZQ==",
      ],
    ],
  });
  assert.ok(!ws.notes.some((n) => n.startsWith("Mirrored")), "upgrades are not mirrored");
});

Deno.test("explainRequest notes a target in slow start, live only", async () => {
  const reg = createUpstreamRegistry({ clock, logger: silentLogger, metrics: noopMetrics });
  const yaml = `
routes:
  "/":
    type: load_balance
    slow_start: 100s
    targets: ["http://10.0.0.1:8080", "http://10.0.0.2:8080"]
`;
  reg.retain(["http://10.0.0.1:8080"], ["/"]);
  reg.retain(["http://10.0.0.1:8080", "http://10.0.0.2:8080"], ["/"]);
  const explain = explainer(yaml);
  const live = await explain({ method: "GET", url: "http://example.com/" }, reg);
  assert.deepEqual(live.notes.filter((n) => n.startsWith("Slow start")), [
    "Slow start: http://10.0.0.2:8080 takes 10 % of its weight",
  ]);
  const offline = await explain({ method: "GET", url: "http://example.com/" });
  assert.equal(offline.notes.some((n) => n.startsWith("Slow start")), false);
});

Deno.test("explainRequest names the error page an answer of Prox's own carries", async () => {
  const explain = explainer(`
error_pages: { 404: { body: "gone" }, 5xx: { body: "later" } }
routes:
  /app:
    type: proxy
    target: http://127.0.0.1:9000
    intercept_upstream: true
    error_pages: { "404": [{ body: "<p>no</p>", content_type: text/html }, { body: "{}", content_type: application/json }] }
`);
  let out = await explain({ method: "GET", url: "http://example.com/nothing" });
  assert.deepEqual(out.answer, { status: 404, message: "Not found", page: "inline" });
  out = await explain({ method: "GET", url: "http://example.com/app/x" });
  assert.equal(out.answer, undefined);
  assert.ok(out.notes.some((n) => n.startsWith("intercept_upstream:")), out.notes.join("\n"));
});

Deno.test("explainRequest notes the PROXY protocol header and the address it carries", async () => {
  const explain = explainer(`
health_check: { enabled: false }
routes: { /app: { type: proxy, target: "http://127.0.0.1:9000", proxy_protocol: v1 } }
`);
  const out = await explain({ method: "GET", url: "http://example.com/app/x" });
  assert.ok(
    out.notes.some((n) => /^proxy_protocol v1: .* address \S+ port \d+ \(a new connection/.test(n)),
    out.notes.join("\n"),
  );
});

Deno.test("explainRequest names the forward_auth check and drops a client's copied field", async () => {
  const explain = explainer(`
health_check: { enabled: false }
forward_auth: { url: "http://auth:9000/check", timeout: 2s, copy_response_headers: [X-Auth-User] }
routes:
  "/api": { type: proxy, target: "http://10.0.0.1:8080" }
  "/open": { type: proxy, target: "http://10.0.0.1:8080", forward_auth: false }
`);
  const checked = await explain({
    method: "POST",
    url: "http://h/api/x",
    headers: [["x-auth-user", "admin"]],
  });
  assert.ok(
    checked.notes.some((n) =>
      n.startsWith(
        "Checked first against the auth service http://auth:9000/check (GET, timeout 2000 ms)",
      )
    ),
    JSON.stringify(checked.notes),
  );
  assert.ok(checked.requestHeaders?.removed.includes("x-auth-user"));
  const open = await explain({ method: "GET", url: "http://h/open/x" });
  assert.ok(!open.notes.some((n) => n.includes("auth service")));
});

Deno.test("explainRequest says when ip_access would refuse the client, and why", async () => {
  const explain = explainer(`
ip_access: { deny: [203.0.113.0/24] }
routes:
  "/api":
    type: proxy
    target: http://10.0.0.1:8080
    ip_access: { allow: [10.0.0.0/8], deny: [10.0.0.66] }
  "/open": { type: proxy, target: http://10.0.0.1:8080 }
`);
  const refused = await explain({ method: "GET", url: "http://x/api", clientIp: "10.0.0.66" });
  assert.equal(refused.route, "/api");
  assert.deepEqual(refused.answer, { status: 403, message: "Forbidden" });
  assert.equal(refused.upstream, undefined);
  assert.deepEqual(refused.notes, ["ip_access refuses client 10.0.0.66: 10.0.0.66 denies it"]);
  const outside = await explain({ method: "GET", url: "http://x/api", clientIp: "192.0.2.1" });
  assert.deepEqual(outside.notes, ["ip_access refuses client 192.0.2.1: no allow entry names it"]);
  const allowed = await explain({ method: "GET", url: "http://x/api", clientIp: "10.0.0.1" });
  assert.equal(allowed.answer, undefined);
  assert.equal(allowed.upstream?.url, "http://10.0.0.1:8080/");
  assert.equal(allowed.notes[0], "ip_access admits client 10.0.0.1: 10.0.0.0/8 allows it");
  // The top level's lists, for a route without its own and for a path no route takes
  const inherited = await explain({ method: "GET", url: "http://x/open", clientIp: "203.0.113.5" });
  assert.equal(inherited.answer?.status, 403);
  const miss = await explain({ method: "GET", url: "http://x/nope", clientIp: "203.0.113.5" });
  assert.equal(miss.answer?.status, 403);
  assert.deepEqual(miss.notes, ["ip_access refuses client 203.0.113.5: 203.0.113.0/24 denies it"]);
});

Deno.test("explainRequest says what basic_auth makes of the request's credentials", async () => {
  const hash = `$2y$05$${"a".repeat(53)}`;
  const explain = explainer(`
routes:
  "/": { type: proxy, target: http://10.0.0.1:8080, basic_auth: { users: { alice: "${hash}" } } }
`);
  const none = await explain({ method: "GET", url: "http://x/" });
  assert.deepEqual(none.answer, { status: 401, message: "Unauthorized" });
  assert.match(none.notes[0], /^basic_auth refuses the request: no Basic credentials/);
  const auth = (user: string) =>
    [["Authorization", `Basic ${btoa(`${user}:pw`)}`]] as [
      string,
      string,
    ][];
  const bob = await explain({ method: "GET", url: "http://x/", headers: auth("bob") });
  assert.equal(bob.answer?.status, 401);
  assert.deepEqual(bob.notes, ['basic_auth refuses the request: no user "bob" (401)']);
  const alice = await explain({ method: "GET", url: "http://x/", headers: auth("alice") });
  assert.equal(alice.answer, undefined);
  assert.match(alice.notes[0], /user "alice" exists; the password is checked on a live request/);
  assert.deepEqual(alice.requestHeaders?.removed, ["authorization"]);
});

Deno.test("explainRequest says what jwt_auth makes of the request's token", async () => {
  const secret = "an-explain-secret-of-at-least-32-bytes";
  const explain = explainer(
    `
routes:
  "/": { type: proxy, target: http://10.0.0.1:8080, jwt_auth: { secret_env: S, claims_to_headers: { sub: X-User } } }
`,
    { S: secret },
  );
  const none = await explain({ method: "GET", url: "http://x/" });
  assert.deepEqual(none.answer, { status: 401, message: "Unauthorized" });
  assert.deepEqual(none.notes, ["jwt_auth refuses the request: no bearer token (401)"]);
  const enc = new TextEncoder();
  const b64 = (s: string) => btoa(s).replaceAll("=", "").replaceAll("+", "-").replaceAll("/", "_");
  const input = `${b64('{"alg":"HS256"}')}.${b64(`{"sub":"ann","exp":${2 ** 31}}`)}`;
  const key = await crypto.subtle.importKey(
    "raw",
    enc.encode(secret),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  const sig = new Uint8Array(await crypto.subtle.sign("HMAC", key, enc.encode(input)));
  const token = `${input}.${b64(String.fromCharCode(...sig))}`;
  const bearer = (t: string) => [["Authorization", `Bearer ${t}`]] as [string, string][];
  const ok = await explain({ method: "GET", url: "http://x/", headers: bearer(token) });
  assert.equal(ok.answer, undefined);
  assert.deepEqual(ok.notes.slice(0, 1), ['jwt_auth: the token is valid (user "ann")']);
  assert.deepEqual(ok.requestHeaders?.added.find(([k]) => k === "x-user"), ["x-user", "ann"]);
  assert.deepEqual(ok.requestHeaders?.removed, ["authorization"]);
  const bad = await explain({ method: "GET", url: "http://x/", headers: bearer(`${token}x`) });
  assert.deepEqual(bad.notes, ["jwt_auth refuses the token: The token signature is invalid (401)"]);
});

Deno.test("fields named with underscores are dropped on the way upstream, WebSockets included", async () => {
  const routes = `routes:
  "/": { type: proxy, target: "http://10.0.0.1:1" }
  "/ws": { type: websocket, target: "http://127.0.0.1:7000" }
`;
  const sent: [string, string][] = [["X_Forwarded_For", "6.6.6.6"], ["X_User", "root"]];
  const upgrade: [string, string][] = [["Upgrade", "websocket"], ["Connection", "Upgrade"]];
  const ex = explainer(routes);
  const plain = await ex({ method: "GET", url: "http://x/a", headers: sent });
  assert.deepEqual(plain.requestHeaders?.removed.sort(), ["x_forwarded_for", "x_user"]);
  const ws = await ex({ method: "GET", url: "http://x/ws", headers: [...sent, ...upgrade] });
  assert.ok(ws.requestHeaders?.removed.includes("x_forwarded_for"));
  assert.ok(ws.requestHeaders?.removed.includes("x_user"));
  // underscores_in_headers: true keeps them.
  const kept = await explainer(`underscores_in_headers: true\n${routes}`)({
    method: "GET",
    url: "http://x/a",
    headers: sent,
  });
  assert.deepEqual(kept.requestHeaders?.removed, []);
});

Deno.test("explainRequest names a unix target's socket as the config writes it", async () => {
  const e = await explainer(`
routes:
  "/a": { type: proxy, target: "unix:/run/a#1.sock", path_rewrite: /v1 }
`)({ method: "GET", url: "http://example.com/a/x?q=1" });
  assert.equal(e.upstream?.url, "unix:/run/a#1.sock:/v1/x?q=1");
  assert.deepEqual(e.requestHeaders!.changed, [["host", "example.com", "localhost"]]);
});

Deno.test("explainRequest notes a route's concurrency_limit and the key a request counts against", async () => {
  const explain = explainer(`
routes:
  "/api":
    type: proxy
    target: "http://10.0.0.1:8080"
    concurrency_limit: { max: 3, by: header, header_name: X-Key, on_missing_key: deny }
`);
  const keyed = await explain({ method: "GET", url: "http://h/api/x", headers: [["x-key", "k1"]] });
  assert.ok(
    keyed.notes.includes(
      "concurrency_limit: at most 3 requests in progress at once for key h:k1 (by header; past it 429)",
    ),
    JSON.stringify(keyed.notes),
  );
  const bare = await explain({ method: "GET", url: "http://h/api/x" });
  assert.ok(bare.notes.includes("concurrency_limit: no header key (on_missing_key: deny)"));
});

Deno.test("explainRequest names both keys a concurrency_limit query key sent twice holds", async () => {
  const explain = explainer(`
routes:
  "/api":
    type: proxy
    target: "http://10.0.0.1:8080"
    concurrency_limit: { max: 3, by: query, query_param: k }
`);
  const e = await explain({ method: "GET", url: "http://h/api/x?k=a&k=b" });
  assert.ok(
    e.notes.includes(
      "concurrency_limit: at most 3 requests in progress at once for key q:a and q:b (by query; past it 429)",
    ),
    JSON.stringify(e.notes),
  );
});

Deno.test("explainRequest: a route's allow_file read empty (a feed mid-rewrite) refuses, not admits", async () => {
  const { config, issues } = loadConfigText(
    `listen_addr: "127.0.0.1:0"
routes:
  "/": { type: proxy, target: http://10.0.0.1:8080, ip_access: { allow_file: office.txt } }
`,
    { file: "t.yaml", env: { exists: () => true } },
  );
  assert.ok(config, JSON.stringify(issues));
  // Validated with entries; read again for the snapshot while being rewritten: empty.
  const snapshot = buildSnapshot(config, { version: 1, files: new Map([["office.txt", ""]]) });
  const out = await explainRequest(
    { method: "GET", url: "http://x/", clientIp: "192.0.2.1" },
    { snapshot, files, clock, logger: silentLogger },
  );
  assert.equal(out.answer?.status, 403);
});

Deno.test("buildSnapshot: routes naming the same list file share one compiled list", () => {
  // A 500,000-line feed named by four routes was parsed and compiled four times: seconds of
  // reload each, and a trie of ~50 MB each.
  const route = (i: number) =>
    `  "/r${i}": { type: proxy, target: http://10.0.0.1:8080, ip_access: { deny_file: feed.txt } }\n`;
  const { config, issues } = loadConfigText(
    `listen_addr: "127.0.0.1:0"\nip_access: { deny_file: feed.txt }\nroutes:\n${
      [0, 1, 2].map(route).join("")
    }  "/own": { type: proxy, target: http://10.0.0.1:8080, ip_access: { deny: [10.0.0.1] } }\n`,
    { file: "t.yaml", env: { exists: () => true } },
  );
  assert.ok(config, JSON.stringify(issues));
  const snapshot = buildSnapshot(config, {
    version: 1,
    files: new Map([["feed.txt", "203.0.113.0/24\n"]]),
  });
  const lists = snapshot.router.entries.map((e) => e.value.ipAccess);
  assert.equal(lists.length, 4);
  for (const l of lists.slice(0, 3)) assert.equal(l, snapshot.ipAccess);
  assert.notEqual(lists[3], snapshot.ipAccess);
});

Deno.test("explainRequest names the list file and line of an ip_access entry that decided", async () => {
  const { config, issues } = loadConfigText(
    `listen_addr: "127.0.0.1:0"
ip_access: { deny_file: block.txt, allow: [all] }
routes:
  "/": { type: proxy, target: http://10.0.0.1:8080 }
`,
    { file: "t.yaml", env: { exists: () => true } },
  );
  assert.ok(config, JSON.stringify(issues));
  const snapshot = buildSnapshot(config, {
    version: 1,
    files: new Map([["block.txt", "# feed\n198.51.100.0/24\n203.0.113.0/24 # spam\n"]]),
  });
  const notes = async (clientIp: string) =>
    (await explainRequest(
      { method: "GET", url: "http://x/", clientIp },
      { snapshot, files, clock, logger: silentLogger },
    )).notes[0];
  assert.equal(
    await notes("203.0.113.5"),
    "ip_access refuses client 203.0.113.5: 203.0.113.0/24 (block.txt:3) denies it",
  );
  assert.equal(await notes("192.0.2.1"), "ip_access admits client 192.0.2.1: all allows it");
});

Deno.test("explainRequest names a jwks_url without its secret query value", async () => {
  const explain = explainer(`
routes:
  "/":
    type: proxy
    target: "http://10.0.0.1:8080"
    jwt_auth: { jwks_url: "https://idp.example/jwks?api_key=K3YVALUE&tenant=t1", audience: app }
`);
  const e = await explain({
    method: "GET",
    url: "http://h/x",
    headers: [["authorization", "Bearer a.b.c"]],
  });
  const text = JSON.stringify(e.notes);
  assert.match(text, /jwks\?api_key=.*tenant=t1/, text);
  assert.doesNotMatch(text, /K3YVALUE/, text);
});

Deno.test("explainRequest uses live health on a websocket route: a drained target is not picked", async () => {
  const reg = createUpstreamRegistry({ clock, logger: silentLogger, metrics: noopMetrics });
  const target = "ws://10.0.0.9:7000";
  reg.retain([target], ["/ws"]);
  assert.ok(reg.drain(target, true));
  const explain = explainer(`routes:\n  "/ws": { type: websocket, target: "${target}" }\n`);
  const upgrade: [string, string][] = [["Upgrade", "websocket"], ["Connection", "Upgrade"]];
  const e = await explain({ method: "GET", url: "http://x/ws", headers: upgrade }, reg);
  assert.equal(e.upstream?.pick, null);
  assert.equal(e.upstream?.pickReason, "no available target: Prox answers 503");
  assert.deepEqual(e.upstream?.targets, [{ url: target, backup: false, available: false }]);
  assert.ok(e.notes.includes(`${target} is drained (admin API): it takes no new requests`));
  assert.equal(e.upstream?.policy, "websocket");
});
