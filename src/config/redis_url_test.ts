import assert from "node:assert/strict";
import { redisUrlProblem } from "./redis_url.ts";
import { formatIssue, loadConfigText } from "./load.ts";

Deno.test("redisUrlProblem accepts what the Redis client connects to", () => {
  for (
    const url of [
      "redis://127.0.0.1:6379",
      "redis://localhost",
      "rediss://cache.example.com:6380/",
      "redis://:p%40ss@h:6379/2",
      "redis://user:pw@[::1]:6379/15",
      "redis://h:6379/0?password=pw",
    ]
  ) assert.equal(redisUrlProblem(url), null, url);
});

Deno.test("redisUrlProblem refuses URLs the client throws on or cannot use, hiding the password", () => {
  assert.equal(redisUrlProblem("redis://[bad"), 'Invalid Redis URL "redis://[bad"');
  assert.equal(
    redisUrlProblem("redis://u:secret@h:notaport"),
    'Invalid Redis URL "redis://u:***@h:notaport"',
  );
  assert.equal(redisUrlProblem("redis://h:99999"), 'Invalid Redis URL "redis://h:99999"');
  assert.equal(redisUrlProblem("redis://u:p@"), 'Invalid Redis URL "redis://u:***@"');
  assert.equal(
    redisUrlProblem("redis://h:6379/cache?password=secret"),
    'Invalid Redis URL "redis://h:6379/cache?password=***": the path is the database number, e.g. /0',
  );
  assert.equal(
    redisUrlProblem("redis://u:100%@h"),
    'Invalid Redis URL "redis://u:***@h": the user name or password has a stray % (write %25 for %)',
  );
  assert.equal(redisUrlProblem("http://h:6379"), 'Invalid Redis URL "http://h:6379"');
});

Deno.test("validate reports an unusable rate_limit_store.url where it is written", () => {
  const text = `listen_addr: "127.0.0.1:3000"
rate_limit_store: { type: redis, url: "redis://app:hunter2@cache:99999" }
routes:
  "/": { type: static, root: "." }
`;
  const res = loadConfigText(text, { file: "c.yaml", env: { exists: () => true } });
  assert.equal(res.config, undefined);
  assert.deepEqual(res.issues.map((i) => formatIssue({ ...i, excerpt: undefined })), [
    'c.yaml:2:34: error: rate_limit_store.url: Invalid Redis URL "redis://app:***@cache:99999"' +
    '\n  fix: Use e.g. url: "redis://127.0.0.1:6379" (rediss:// for TLS)',
  ]);
});

Deno.test("validate warns that rate_limit_store.url without type: redis is not used", () => {
  const text = `listen_addr: "127.0.0.1:3000"
rate_limit_store: { url: "redis://cache:6379" }
routes:
  "/": { type: static, root: "." }
`;
  const res = loadConfigText(text, { file: "c.yaml", env: { exists: () => true } });
  assert.ok(res.config);
  assert.deepEqual(res.issues.map((i) => formatIssue({ ...i, excerpt: undefined })), [
    "c.yaml:2:21: warning: rate_limit_store.url: url is ignored: type is memory (the default)" +
    "\n  fix: Add type: redis to share the counters through Redis",
  ]);
});

Deno.test("validate refuses rate_limit_store.timeout: 0s (decisions timed out at random)", () => {
  const text = `listen_addr: "127.0.0.1:3000"
rate_limit_store: { type: redis, url: "redis://cache:6379", timeout: 0s }
routes:
  "/": { type: static, root: "." }
`;
  const res = loadConfigText(text, { file: "c.yaml", env: { exists: () => true } });
  assert.equal(res.config, undefined);
  assert.deepEqual(res.issues.map((i) => formatIssue({ ...i, excerpt: undefined })), [
    "c.yaml:2:61: error: rate_limit_store.timeout: timeout must be greater than 0" +
    "\n  fix: E.g. timeout: 100ms (how long a request waits for Redis before on_error applies)",
  ]);
});

Deno.test("validate: password_env is set, and the url gives no password besides", () => {
  const issues = (store: string, acme: string, vars: Record<string, string> = {}) =>
    loadConfigText(
      `listen_addr: "127.0.0.1:3000"
rate_limit_store: ${store}
tls:
  acme: { enabled: true, domains: [a.example], ca_url: "https://ca.example/dir", redis: ${acme} }
routes:
  "/": { type: static, root: "." }
`,
      { file: "c.yaml", env: { exists: () => true, env: (n) => vars[n] } },
    ).issues.filter((i) => i.path.endsWith("password_env")).map((i) =>
      `${i.severity} ${i.path}: ${i.message}`
    );
  const store = (url: string) => `{ type: redis, url: "${url}", password_env: RL_PW }`;
  const acme = (url: string) => `{ url: "${url}", password_env: ACME_PW }`;
  assert.deepEqual(
    issues(store("redis://cache:6379"), acme("rediss://user@cache:6380/1"), {
      RL_PW: "a",
      ACME_PW: "",
    }),
    [],
  );
  assert.deepEqual(issues(store("redis://cache:6379"), acme("redis://cache:6379")), [
    "error rate_limit_store.password_env: Environment variable RL_PW is not set",
    "error tls.acme.redis.password_env: Environment variable ACME_PW is not set",
  ]);
  const both = issues(
    store("redis://:hunter2@cache:6379"),
    acme("redis://cache:6379/0?password=hunter2"),
    { RL_PW: "a", ACME_PW: "b" },
  );
  assert.deepEqual(both, [
    "error rate_limit_store.password_env: Both the url and password_env give the Redis password",
    "error tls.acme.redis.password_env: Both the url and password_env give the Redis password",
  ]);
});
