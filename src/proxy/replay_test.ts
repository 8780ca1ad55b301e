import assert from "node:assert/strict";
import { loadConfigText } from "../config/load.ts";
import { buildSnapshot } from "./snapshot.ts";
import { silentLogger } from "../ports.ts";
import type { FileStore } from "../ports.ts";
import type { ExplainDeps } from "./explain.ts";
import { parseAccessLine, Replayer, requestOf } from "./replay.ts";
import type { LoggedRequest } from "./replay.ts";

const clock = { now: () => 1_700_000_000_000, monotonic: () => 0 };
const files: FileStore = {
  stat: (root, rel) =>
    Promise.resolve(
      root === "/srv/www" && rel === "app.js"
        ? { isFile: true, isDirectory: false, size: 3, mtime: 0 }
        : null,
    ),
  open: () => Promise.resolve(new Uint8Array([1, 2, 3])),
};

function deps(yaml: string): ExplainDeps {
  const { config, issues } = loadConfigText(`listen_addr: "127.0.0.1:0"\n${yaml}`, {
    file: "t.yaml",
    env: { exists: () => true },
  });
  assert.ok(config, JSON.stringify(issues));
  return { snapshot: buildSnapshot(config, { version: 1 }), files, clock, logger: silentLogger };
}

/** An access line as log_json writes it, with `over` replacing fields. */
function line(over: Partial<LoggedRequest> & Record<string, unknown>): string {
  return JSON.stringify({
    time: "2026-11-27T00:00:00.000Z",
    requestId: "r1",
    clientIp: "10.1.2.3",
    method: "GET",
    host: "example.com",
    path: "/",
    status: 200,
    bytesIn: 0,
    bytesOut: 2,
    durationMs: 1,
    route: null,
    upstream: null,
    upstreamStatus: null,
    upstreamMs: null,
    protocol: "http/1.1",
    tls: false,
    retries: 0,
    error: null,
    userAgent: null,
    referer: null,
    level: "info",
    msg: "access",
    ...over,
  });
}

const CURRENT = `
routes:
  "/api": { type: proxy, target: "http://10.0.0.1:8080" }
  "/old": { type: redirect, target: /new, status_code: 308 }
  "/assets": { type: static, root: /srv/www }
  "/lb":
    type: load_balance
    targets: ["http://10.0.0.1:80", "http://10.0.0.2:80"]
`;

const CANDIDATE = `
routes:
  "/api": { type: proxy, target: "http://10.0.0.1:8080", path_rewrite: /v2 }
  "/api/admin":
    type: proxy
    target: "http://10.0.0.5:8080"
    basic_auth: { users: { ann: "$2b$10$abcdefghijklmnopqrstuu1234567890123456789012345678901" } }
  "/old": { type: redirect, target: /new, status_code: 301 }
  "/assets": { type: static, root: /srv/www }
  "/lb":
    type: load_balance
    targets: ["http://10.0.0.2:80", { url: "http://10.0.0.3:80", backup: true }]
`;

Deno.test("parseAccessLine: access records parse; other lines say why they are skipped", () => {
  const rec = parseAccessLine(line({ path: "/api/x", route: "/api", authUser: "ann" }));
  assert.ok(rec && !("skip" in rec));
  assert.equal(rec.path, "/api/x");
  assert.equal(rec.authUser, "ann");
  assert.equal(parseAccessLine("   "), null);
  const skip = (l: string) => (parseAccessLine(l) as { skip: string }).skip;
  assert.match(skip('127.0.0.1 - - [27/Nov/2026] "GET / HTTP/1.1" 200 2'), /not JSON/);
  assert.match(skip(`{"level":"info","msg":"listening"}`), /a log line \("listening"\)/);
  assert.match(skip(`{"method":"GET"}`), /not an access record/);
  assert.match(skip(line({ method: "-", host: "invalid" })), /refused before routing/);
  assert.match(skip(line({ method: "OPTIONS", path: "*" })), /not routed/);
  // A shipper's prefix before the object is tolerated.
  const prefixed = parseAccessLine(`Nov 27 h prox[1]: ${line({ path: "/p" })}`);
  assert.ok(prefixed && !("skip" in prefixed) && prefixed.path === "/p");
});

Deno.test("requestOf: Basic credentials for a logged authUser, a handshake for a logged 101", () => {
  const rec = parseAccessLine(line({ authUser: "ann", status: 101, tls: true })) as LoggedRequest;
  const req = requestOf(rec);
  assert.equal(req.url, "https://example.com/");
  const h = new Map(req.headers);
  assert.equal(h.get("authorization"), `Basic ${btoa("ann:")}`);
  assert.equal(h.get("upgrade"), "websocket");
  assert.equal(h.get("host"), "example.com");
});

const U5 = "http://10.0.0.5:8080";

Deno.test("Replayer: against the log, changed routes, targets and own answers are grouped", async () => {
  const r = new Replayer(deps(CANDIDATE));
  const lines = [
    // Unchanged: same route, the logged target is still the route's.
    line({ path: "/api/a", route: "/api", upstream: "http://10.0.0.1:8080" }),
    line({ path: "/api/b", route: "/api", upstream: "http://10.0.0.1:8080" }),
    // A longer route now takes it, behind basic_auth: without credentials (none logged), 401.
    line({ path: "/api/admin/x", route: "/api", upstream: "http://10.0.0.1:8080" }),
    // A logged authUser counts as signed in while the user exists.
    line({ path: "/api/admin/y", route: "/api/admin", upstream: U5, authUser: "ann" }),
    line({ path: "/api/admin/z", route: "/api/admin", upstream: U5, authUser: "bob" }),
    // The logged target left the pool; the other is still there.
    line({ path: "/lb/1", route: "/lb", upstream: "http://10.0.0.1:80" }),
    line({ path: "/lb/2", route: "/lb", upstream: "http://10.0.0.2:80" }),
    // Another status of Prox's own; a 503 from health state is not a change.
    line({ path: "/old/p", route: "/old", status: 308 }),
    line({ path: "/api/c", route: "/api", status: 503, error: "destination_unavailable" }),
    // Answered from the cache: no upstream logged, and none to compare.
    line({ path: "/api/d", route: "/api", status: 200, cache: "hit" }),
    // No route any more: 404.
    line({ path: "/gone", route: "/gone", upstream: "http://10.9.9.9:80" }),
    // A static file's status (here 304, from a conditional request) is not compared.
    line({ path: "/assets/app.js", route: "/assets", status: 304 }),
    "not json",
    `{"level":"info","msg":"Prox listening"}`,
  ];
  for (const [i, l] of lines.entries()) await r.line(l, `log:${i + 1}`);
  const t = r.tally;
  assert.equal(t.requests, 12);
  assert.equal(t.unchanged, 7);
  assert.equal(t.changed, 5);
  assert.equal(t.notFound, 1);
  // Prox's own log lines are counted apart, without samples.
  assert.deepEqual([t.skipped, t.logLines], [2, 1]);
  assert.deepEqual(t.skippedSamples, [
    "log:13: not JSON (replay reads log.access_log: json lines)",
  ]);
  assert.deepEqual(t.groups().map((g) => [g.from, g.to, g.count, g.samples]), [
    ["/api/admin: upstream http://10.0.0.5:8080", "/api/admin: 401 Unauthorized", 1, [
      "GET http://example.com/api/admin/z",
    ]],
    ["/api: upstream http://10.0.0.1:8080", "/api/admin: 401 Unauthorized", 1, [
      "GET http://example.com/api/admin/x",
    ]],
    ["/gone: upstream http://10.9.9.9:80", "(no route): 404 Not found", 1, [
      "GET http://example.com/gone",
    ]],
    [
      "/lb: upstream http://10.0.0.1:80",
      "/lb: upstream http://10.0.0.2:80 | http://10.0.0.3:80 (backup)",
      1,
      [
        "GET http://example.com/lb/1 → http://10.0.0.2/1",
      ],
    ],
    ["/old: 308 from Prox", "/old: redirect 301", 1, ["GET http://example.com/old/p → /new/p"]],
  ]);
  // The basic_auth route decided a request whose credentials the log does not hold.
  assert.deepEqual(t.uncertain().map((u) => [u.route, u.requests]), [["/api/admin", 3]]);
});

Deno.test("Replayer: --against compares both configs' whole outcomes, URL included", async () => {
  const r = new Replayer(deps(CANDIDATE), { against: deps(CURRENT), samples: 1 });
  for (const p of ["/api/a", "/api/b", "/lb/x", "/assets/app.js", "/nothing"]) {
    await r.line(line({ path: p }), "log");
  }
  const t = r.tally;
  assert.equal(t.unchanged, 2); // the static file; no route either way
  assert.deepEqual(t.groups().map((g) => [g.from, g.to, g.count, g.samples]), [
    [
      "/api: upstream http://10.0.0.1:8080",
      "/api: upstream http://10.0.0.1:8080 (other upstream URL)",
      2,
      [
        "GET http://example.com/api/a: http://10.0.0.1:8080/a → http://10.0.0.1:8080/v2/a",
      ],
    ],
    [
      "/lb: upstream http://10.0.0.1:80 | http://10.0.0.2:80",
      "/lb: upstream http://10.0.0.2:80 | http://10.0.0.3:80 (backup)",
      1,
      ["GET http://example.com/lb/x: http://10.0.0.1/x → http://10.0.0.2/x"],
    ],
  ]);
  assert.equal(t.notFound, 0);
});

Deno.test("Replayer: WebSocket handshakes are told by a logged 101 or ws:// upstream", async () => {
  const r = new Replayer(deps(`
routes:
  "/ws": { type: websocket, target: "ws://10.0.0.7:9000" }
`));
  const ws = "ws://10.0.0.7:9000";
  // A handshake answered 101; one the upstream refused (its 403); a plain GET answered 400.
  await r.line(line({ path: "/ws/a", route: "/ws", status: 101, upstream: ws }), "log:1");
  await r.line(line({ path: "/ws/b", route: "/ws", status: 403, upstream: ws }), "log:2");
  await r.line(line({ path: "/ws/c", route: "/ws", status: 400 }), "log:3");
  assert.deepEqual([r.tally.unchanged, r.tally.changed], [3, 0]);
  assert.deepEqual(r.tally.uncertain().map((u) => [u.route, u.requests]), [["/ws", 3]]);
});

Deno.test("Replayer: a forward_auth refusal in the log is not a change (the service decides)", async () => {
  const r = new Replayer(deps(`
routes:
  "/app":
    type: proxy
    target: "http://10.0.0.8:80"
    forward_auth: { url: "http://10.0.0.9:4000/verify" }
`));
  await r.line(line({ path: "/app/a", route: "/app", status: 302 }), "log:1");
  await r.line(line({ path: "/app/b", route: "/app", upstream: "http://10.0.0.8:80" }), "log:2");
  assert.deepEqual([r.tally.unchanged, r.tally.changed], [2, 0]);
  assert.match(r.tally.uncertain()[0].reason, /^forward_auth: the auth service decides/);
});

Deno.test("Replayer: --against, a target that becomes a backup is a change", async () => {
  const lb = (b: string) => `
routes:
  "/": { type: load_balance, targets: ["http://10.0.0.1:80", ${b}] }
`;
  const r = new Replayer(deps(lb(`{ url: "http://10.0.0.2:80", backup: true }`)), {
    against: deps(lb(`"http://10.0.0.2:80"`)),
  });
  await r.line(line({ path: "/x" }), "log:1");
  assert.deepEqual(r.tally.groups().map((g) => g.to), [
    "/: upstream http://10.0.0.1:80 | http://10.0.0.2:80 (backup)",
  ]);
});

Deno.test("Replayer: a logged query string goes into the replayed request, its sample and URL", async () => {
  const rec = parseAccessLine(line({ path: "/api/a", query: "x=1&y=%20" })) as LoggedRequest;
  assert.equal(rec.query, "x=1&y=%20");
  assert.equal(requestOf(rec).url, "http://example.com/api/a?x=1&y=%20");
  // A line from before the field: no query.
  assert.equal((parseAccessLine(line({ path: "/p" })) as LoggedRequest).query, "");
  const r = new Replayer(deps(CANDIDATE), { against: deps(CURRENT), samples: 2 });
  await r.line(line({ path: "/api/a", query: "x=1" }), "log");
  await r.line(line({ path: "/api/a", query: "x=2" }), "log");
  const [g] = r.tally.groups();
  assert.equal(g.count, 2);
  assert.deepEqual(g.samples, [
    "GET http://example.com/api/a?x=1: http://10.0.0.1:8080/a?x=1 → http://10.0.0.1:8080/v2/a?x=1",
    "GET http://example.com/api/a?x=2: http://10.0.0.1:8080/a?x=2 → http://10.0.0.1:8080/v2/a?x=2",
  ]);
});

Deno.test("Replayer: a jwt_auth route's logged requests are not changes (tokens are not logged)", async () => {
  const r = new Replayer(deps(`
routes:
  "/api":
    type: proxy
    target: "http://10.0.0.8:80"
    jwt_auth: { jwks_url: "https://idp.example/jwks" }
`));
  const up = "http://10.0.0.8:80";
  await r.line(line({ path: "/api/a", route: "/api", upstream: up, authUser: "ann" }), "log:1");
  await r.line(line({ path: "/api/b", route: "/api", upstream: up }), "log:2");
  await r.line(line({ path: "/api/c", route: "/api", status: 401 }), "log:3");
  assert.deepEqual([r.tally.unchanged, r.tally.changed], [3, 0]);
  assert.match(r.tally.uncertain()[0].reason, /^jwt_auth: tokens are not logged/);
});

Deno.test("Replayer: a conditional route that reads headers makes its prefix's decisions uncertain", async () => {
  const r = new Replayer(deps(`
routes:
  "/":
    type: proxy
    target: "http://10.0.0.1:80"
  "/api":
    type: proxy
    target: "http://10.0.0.2:80"
  "/api#canary":
    type: proxy
    target: "http://10.0.0.3:80"
    match: { has_header: { name: X-Canary } }
  "/beta#q":
    type: proxy
    target: "http://10.0.0.4:80"
    match: [{ method_is: GET }, { has_header: { name: Cookie, value_matches: "beta=1" } }]
  "/w#writes":
    type: proxy
    target: "http://10.0.0.5:80"
    match: { method_is: POST }
`));
  // Logged on the canary route (the header held), replayed without the header.
  await r.line(
    line({ path: "/api/a", route: "/api#canary", upstream: "http://10.0.0.3:80" }),
    "log:1",
  );
  // Logged on /beta#q, replayed to / (a shorter prefix) without the cookie.
  await r.line(
    line({ path: "/beta/a", route: "/beta#q", upstream: "http://10.0.0.4:80" }),
    "log:2",
  );
  // method_is is decided by what is logged: certain.
  await r.line(
    line({ method: "POST", path: "/w/a", route: "/w#writes", upstream: "http://10.0.0.5:80" }),
    "log:3",
  );
  // The replay went to /api, which shares its prefix with the canary: uncertain too.
  assert.deepEqual(r.tally.uncertain().map((u) => u.route).sort(), [
    "/api",
    "/api#canary",
    "/beta#q",
  ]);
  for (const u of r.tally.uncertain()) {
    assert.match(u.reason, /^match: request headers are not logged/);
  }
});
