import assert from "node:assert/strict";
import { loadConfigText } from "../../config/load.ts";
import { buildSnapshot } from "../snapshot.ts";
import { createHandler } from "../pipeline.ts";
import { noopMetrics, silentLogger } from "../../ports.ts";
import type { AccessDenial, AccessRecord, ClientInfo, PasswordCheck } from "../../ports.ts";
import { waitFor } from "../../../tests/_harness.ts";
import {
  authUserValue,
  BURST,
  compileBasicAuth,
  GLOBAL_BURST,
  GLOBAL_PER_SECOND,
  MAX_IN_FLIGHT,
} from "./basic_auth.ts";

// Fake hashes: any well-formed bcrypt string; the fake check knows which password each stands for.
const HASH_ALICE = `$2y$10$${"a".repeat(53)}`;
const HASH_JOSE = `$2b$10$${"j".repeat(53)}`;
const PASSWORDS: Record<string, string> = { [HASH_ALICE]: "wonder:land", [HASH_JOSE]: "ñandú" };

const info = (ip = "192.0.2.7"): ClientInfo => ({
  remoteAddr: { hostname: ip, port: 4000 },
  localPort: 80,
  protocol: "http/1.1",
  tls: false,
});

const basic = (user: string, password: string) => {
  const bytes = new TextEncoder().encode(`${user}:${password}`);
  return `Basic ${btoa(String.fromCharCode(...bytes))}`;
};

/** A pipeline with a basic_auth route; the fake check counts calls and may be held open. */
function setup(extra = "", opts: { hold?: boolean } = {}) {
  const { config, issues } = loadConfigText(
    `listen_addr: "127.0.0.1:0"
health_check: { enabled: false }
routes:
  "/":
    type: proxy
    target: http://10.1.1.1
    request_headers: { add: { X-User: "{auth_user}" } }
    basic_auth:
      realm: 'Staff "only"'
      users: { alice: "${HASH_ALICE}", "jose\u0301": "${HASH_JOSE}" }
${extra}`,
    { file: "t.yaml", env: { exists: () => true } },
  );
  assert.ok(config, JSON.stringify(issues));
  const snapshot = buildSnapshot(config, { version: 1 });
  const seen: { authorization: string | null; user: string | null }[] = [];
  const records: AccessRecord[] = [];
  const denials: AccessDenial[] = [];
  const checks: string[] = [];
  const hashes: string[] = [];
  const release: (() => void)[] = [];
  let now = 0;
  const passwords: PasswordCheck = {
    verify: async (password, hash) => {
      checks.push(password);
      hashes.push(hash);
      if (opts.hold) await new Promise<void>((r) => release.push(r));
      return PASSWORDS[hash] === password;
    },
  };
  const handler = createHandler({
    snapshot: () => snapshot,
    upstream: {
      send: (r) => {
        seen.push({
          authorization: r.headers.get("authorization"),
          user: r.headers.get("x-user"),
        });
        return Promise.resolve(new Response("ok"));
      },
      close: () => Promise.resolve(),
    },
    files: { stat: () => Promise.resolve(null), open: () => Promise.resolve(null) },
    clock: { now: () => 1_700_000_000_000 + now, monotonic: () => now },
    logger: silentLogger,
    metrics: { ...noopMetrics, accessDenied: (_r, why) => void denials.push(why) },
    access: (r) => records.push(r),
    passwords,
    random: () => 0.5,
  });
  const get = async (authorization?: string, ip?: string, method = "GET") => {
    const res = await handler(
      new Request("http://h/x", { method, headers: authorization ? { authorization } : {} }),
      info(ip),
    );
    const body = await res.text();
    return { res, body };
  };
  return {
    get,
    seen,
    records,
    denials,
    checks,
    hashes,
    release,
    advance: (ms: number) => now += ms,
  };
}

Deno.test("basic_auth answers 401 with the challenge without credentials", async () => {
  const t = setup();
  const { res, body } = await t.get();
  assert.equal(res.status, 401);
  assert.equal(
    res.headers.get("www-authenticate"),
    'Basic realm="Staff \\"only\\"", charset="UTF-8"',
  );
  assert.equal(res.headers.get("proxy-status"), "prox; error=http_request_denied");
  assert.match(body, /^Unauthorized\nrequest id: /);
  assert.equal((await t.get("Bearer x")).res.status, 401);
  // every method, a CORS preflight too (it carries no credentials)
  assert.equal((await t.get(undefined, undefined, "OPTIONS")).res.status, 401);
  assert.equal((await t.get("Basic !!!")).res.status, 401);
  assert.deepEqual(t.denials, [
    "credentials_missing",
    "credentials_missing",
    "credentials_missing",
    "credentials_wrong",
  ]);
  assert.equal(t.checks.length, 0);
  assert.equal(t.seen.length, 0);
  assert.equal(t.records[0].error, "http_request_denied");
});

Deno.test("basic_auth lets a right password through, strips Authorization, sets {auth_user}", async () => {
  const t = setup();
  const { res, body } = await t.get(basic("alice", "wonder:land"));
  assert.equal(res.status, 200);
  assert.equal(body, "ok");
  assert.deepEqual(t.seen, [{ authorization: null, user: "alice" }]);
  assert.equal(t.records[0].authUser, "alice");
  // a wrong password, a wrong user: 401, and each costs a check
  assert.equal((await t.get(basic("alice", "wonder"))).res.status, 401);
  assert.equal((await t.get(basic("bob", "wonder:land"))).res.status, 401);
  assert.deepEqual(t.checks, ["wonder:land", "wonder", "wonder:land"]);
  assert.equal(t.records[1].authUser, undefined);
});

Deno.test("basic_auth: an unknown user's check takes a real user's hash, the same one each time, not always the first's", async () => {
  // Users' hashes may differ in cost (htpasswd -B writes cost 5, prox hash-password 10): if every
  // unknown name were checked against the first user's, any user of another cost would show by
  // its timing. Each name keeps one hash, so repeating a probe shows no variance either.
  const t = setup();
  const first = new Map<string, string>();
  for (let i = 0; i < 40; i++) {
    t.advance(1000); // the process's budget refills
    assert.equal((await t.get(basic(`ghost${i}`, "x"), `198.51.100.${i + 1}`)).res.status, 401);
    first.set(`ghost${i}`, t.hashes.at(-1)!);
  }
  assert.deepEqual(new Set(first.values()), new Set([HASH_ALICE, HASH_JOSE]));
  for (const [name, hash] of [...first].slice(0, 5)) {
    t.advance(1000);
    assert.equal((await t.get(basic(name, "y"), "203.0.113.9")).res.status, 401);
    assert.equal(t.hashes.at(-1), hash, name);
  }
});

Deno.test("basic_auth compares user names in NFC and passes UTF-8 through", async () => {
  const t = setup();
  // configured as "jose" + combining acute; sent precomposed
  const { res } = await t.get(basic("jos\u00e9", "ñandú"));
  assert.equal(res.status, 200);
  assert.equal(t.seen[0].user, "jos%C3%A9");
  assert.equal(t.records[0].authUser, "jos\u00e9");
});

Deno.test("basic_auth forward_authorization keeps the client's Authorization", async () => {
  const t = setup("      forward_authorization: true\n");
  const creds = basic("alice", "wonder:land");
  assert.equal((await t.get(creds)).res.status, 200);
  assert.equal(t.seen[0].authorization, creds);
});

Deno.test("basic_auth remembers a success: the next requests run no password check", async () => {
  const t = setup();
  for (let i = 0; i < 20; i++) {
    assert.equal((await t.get(basic("alice", "wonder:land"))).res.status, 200);
  }
  assert.equal(t.checks.length, 1);
});

Deno.test("basic_auth shares one check among concurrent requests with the same credentials", async () => {
  const t = setup("", { hold: true });
  const pending = Array.from({ length: 10 }, () => t.get(basic("alice", "wonder:land")));
  await waitFor(() => t.release.length > 0, { what: "a check to start" });
  t.release.forEach((r) => r());
  const results = await Promise.all(pending);
  assert.deepEqual(results.map((r) => r.res.status), Array(10).fill(200));
  assert.equal(t.checks.length, 1);
});

Deno.test("basic_auth limits password checks per client address, then refills", async () => {
  const t = setup();
  for (let i = 0; i < BURST; i++) {
    assert.equal((await t.get(basic("alice", `guess${i}`))).res.status, 401);
  }
  const { res, body } = await t.get(basic("alice", "guess-more"));
  assert.equal(res.status, 429);
  assert.equal(res.headers.get("retry-after"), "1");
  assert.match(body, /^Too many password attempts\n/);
  // not even the right password is checked while the budget is spent
  assert.equal((await t.get(basic("alice", "wonder:land"))).res.status, 429);
  assert.equal(t.checks.length, BURST);
  // another client is not affected
  assert.equal((await t.get(basic("alice", "x"), "192.0.2.8")).res.status, 401);
  // (the process's own budget refills meanwhile; its test is below)
  t.advance(GLOBAL_BURST * 1000 / GLOBAL_PER_SECOND);
  // IPv6 clients share a /64
  for (let i = 0; i < BURST; i++) await t.get(basic("alice", `v6-${i}`), `2001:db8::${i + 1}`);
  assert.equal((await t.get(basic("alice", "x"), "2001:db8::ffff")).res.status, 429);
  assert.equal((await t.get(basic("alice", "x"), "2001:db8:0:1::1")).res.status, 401);
  assert.equal((await t.get(basic("alice", "wonder:land"))).res.status, 200);
  assert.ok(t.denials.includes("throttled"));
});

Deno.test("basic_auth: a refusal costs the same keyed hashes for a known and an unknown user", async () => {
  // Once a client is throttled its 429s cost no bcrypt and no budget: any difference in the work
  // before the verdict (an unknown user's decoy pick was one HMAC more) is timed for free, as
  // often as the client likes, and tells which users exist.
  const t = setup();
  for (let i = 0; i < BURST; i++) await t.get(basic("alice", `guess${i}`));
  const sign = crypto.subtle.sign;
  let macs = 0;
  crypto.subtle.sign = function (...args: Parameters<SubtleCrypto["sign"]>) {
    macs++;
    return sign.apply(this, args);
  };
  const cost = async (user: string) => {
    macs = 0;
    assert.equal((await t.get(basic(user, "guess"))).res.status, 429);
    return macs;
  };
  try {
    assert.equal(await cost("alice"), await cost("mallory"));
    // Without throttling too: a 401 for a wrong password and for an unknown user.
    t.advance(GLOBAL_BURST * 1000 / GLOBAL_PER_SECOND);
    const other = async (user: string, ip: string) => {
      macs = 0;
      assert.equal((await t.get(basic(user, "guess"), ip)).res.status, 401);
      return macs;
    };
    assert.equal(await other("alice", "192.0.2.20"), await other("mallory", "192.0.2.21"));
  } finally {
    crypto.subtle.sign = sign;
  }
});

Deno.test("basic_auth: many client addresses together get GLOBAL_PER_SECOND checks after a burst", async () => {
  const t = setup();
  const client = (i: number) => `198.51.${i >> 8}.${i & 255}`;
  for (let i = 0; i < GLOBAL_BURST; i++) {
    assert.equal((await t.get(basic("alice", "no"), client(i))).res.status, 401);
  }
  assert.equal((await t.get(basic("alice", "no"), client(100))).res.status, 429);
  // the one refused spent no token of its own address
  t.advance(1000 / GLOBAL_PER_SECOND);
  assert.equal((await t.get(basic("alice", "wonder:land"), client(100))).res.status, 200);
  assert.equal((await t.get(basic("alice", "no"), client(101))).res.status, 429);
  assert.equal(t.checks.length, GLOBAL_BURST + 1);
  // a cached success needs no check: never refused
  assert.equal((await t.get(basic("alice", "wonder:land"), client(102))).res.status, 200);
});

Deno.test("basic_auth runs at most MAX_IN_FLIGHT checks at once in a process", async () => {
  const t = setup("", { hold: true });
  const pending = Array.from(
    { length: MAX_IN_FLIGHT },
    (_, i) => t.get(basic("alice", `p${i}`), `198.51.100.${i + 1}`),
  );
  await waitFor(() => t.release.length === MAX_IN_FLIGHT, { what: "checks to start" });
  const over = await t.get(basic("alice", "one more"), "198.51.100.200");
  assert.equal(over.res.status, 429);
  t.release.forEach((r) => r());
  assert.deepEqual(
    (await Promise.all(pending)).map((r) => r.res.status),
    Array(MAX_IN_FLIGHT).fill(401),
  );
  assert.equal(t.checks.length, MAX_IN_FLIGHT);
});

Deno.test("basic_auth without a PasswordCheck refuses every password (fails closed)", async () => {
  const { config } = loadConfigText(
    `listen_addr: "127.0.0.1:0"
routes: { "/": { type: redirect, target: /x, basic_auth: { users: { a: "${HASH_ALICE}" } } } }`,
    { file: "t.yaml", env: { exists: () => true } },
  );
  const snapshot = buildSnapshot(config!, { version: 1 });
  const handler = createHandler({
    snapshot: () => snapshot,
    upstream: { send: () => Promise.reject(new Error("no")), close: () => Promise.resolve() },
    files: { stat: () => Promise.resolve(null), open: () => Promise.resolve(null) },
    clock: { now: () => 0, monotonic: () => 0 },
    logger: silentLogger,
    metrics: noopMetrics,
  });
  const res = await handler(
    new Request("http://h/", { headers: { authorization: basic("a", "wonder:land") } }),
    info(),
  );
  await res.body?.cancel();
  assert.equal(res.status, 401);
});

Deno.test("authUserValue percent-encodes what is not printable ASCII, and %", () => {
  assert.equal(authUserValue(undefined), "");
  assert.equal(authUserValue("bob smith"), "bob smith");
  assert.equal(authUserValue("a%b\r\nX: y"), "a%25b%0D%0AX: y");
  assert.equal(authUserValue("日本"), "%E6%97%A5%E6%9C%AC");
  // A jwt_auth user claim may hold half an emoji (JSON allows "\ud83d"): U+FFFD, not a throw.
  assert.equal(authUserValue("ab\ud83d"), "ab%EF%BF%BD");
});

Deno.test("compileBasicAuth leaves out a hash whose bcrypt cost would take days per check", () => {
  // Cost 31: 2^31 rounds. Checked against (by its user, or by made-up names as the decoy), four
  // such checks at once would leave every user not yet cached with 429 for days.
  const slow = `$2b$31$${"s".repeat(53)}`;
  const auth = compileBasicAuth({
    realm: "r",
    users: { alice: HASH_ALICE, mallory: slow },
    forward_authorization: false,
  });
  assert.deepEqual([...auth.users.keys()], ["alice"]);
  assert.deepEqual(auth.hashes, [HASH_ALICE]);
});
