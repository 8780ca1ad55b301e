import assert from "node:assert/strict";
import {
  compileCors,
  isPreflight,
  mergeVary,
  normalizeOrigin,
  originAllowed,
  originRegex,
  preflightFields,
  preflightVary,
  responseFields,
  strangerAdmitted,
  suffixAdmitted,
  unescapedDot,
  variesByOrigin,
} from "./cors.ts";
import type { CorsSpec } from "./cors.ts";

const spec = (o: Partial<CorsSpec>): CorsSpec => ({
  allow_origins: [],
  allow_methods: ["GET", "POST", "PUT"],
  allow_headers: [],
  expose_headers: [],
  allow_credentials: false,
  ...o,
});

Deno.test("normalizeOrigin writes hosts and ports as browsers serialize them (WHATWG URL)", () => {
  // Written another way, the entry would never equal the Origin a browser sends.
  const same = (entry: string, origin: string) =>
    assert.deepEqual(normalizeOrigin(entry), { origin }, entry);
  same("http://[0:0:0:0:0:0:0:1]:3000", "http://[::1]:3000");
  same("https://[2001:DB8::0:1]", "https://[2001:db8::1]");
  same("http://127.000.000.001:8080", "http://127.0.0.1:8080");
  same("https://app.example.com:0443", "https://app.example.com");
  same("http://localhost:03000", "http://localhost:3000");
  same("https://*.example.com:08443", "https://*.example.com:8443");
  const entry = normalizeOrigin("http://[0:0::1]:3000");
  assert.ok("origin" in entry);
  const policy = compileCors(spec({ allow_origins: [entry.origin] }));
  assert.ok(originAllowed(policy, "http://[::1]:3000"));
});

Deno.test("normalizeOrigin lower-cases, drops a default port, refuses paths and null", () => {
  assert.deepEqual(normalizeOrigin("HTTPS://App.Example.com"), {
    origin: "https://app.example.com",
  });
  assert.deepEqual(normalizeOrigin("https://app.example.com:443"), {
    origin: "https://app.example.com",
  });
  assert.deepEqual(normalizeOrigin("http://localhost:3000"), { origin: "http://localhost:3000" });
  assert.deepEqual(normalizeOrigin("https://*.Example.com:8443"), {
    origin: "https://*.example.com:8443",
  });
  assert.deepEqual(normalizeOrigin("*"), { origin: "*" });
  assert.deepEqual(normalizeOrigin("http://[::1]:8080"), { origin: "http://[::1]:8080" });
  const problem = (s: string) => {
    const n = normalizeOrigin(s);
    assert.ok("problem" in n, s);
    return n.problem;
  };
  assert.match(problem("https://app.example.com/"), /has a path.*https:\/\/app\.example\.com$/);
  assert.match(problem("null"), /sandboxed/);
  assert.match(problem("app.example.com"), /not an origin/);
  assert.match(problem("https://a.*.example.com"), /a \* only as the first label/);
  assert.match(problem("https://*example.com"), /a \* only as the first label/);
  assert.match(problem("https://app.example.com:99999"), /not an origin/);
  assert.match(problem("https://user@app.example.com"), /not an origin/);
  assert.match(
    problem("https://bücher.example"),
    /browsers send "https:\/\/xn--bcher-kva\.example"/,
  );
  assert.match(
    problem("https://*.Bücher.example:8443"),
    /browsers send "https:\/\/\*\.xn--bcher-kva\.example:8443"/,
  );
});

Deno.test("originAllowed matches exact origins and whole-label wildcards only", () => {
  const p = compileCors(spec({
    allow_origins: ["https://app.example.com", "https://*.example.com", "http://*.dev.test:3000"],
  }));
  assert.ok(originAllowed(p, "https://app.example.com"));
  assert.ok(originAllowed(p, "https://a.example.com"));
  assert.ok(originAllowed(p, "https://a.b.example.com"));
  assert.ok(originAllowed(p, "http://x.dev.test:3000"));
  for (
    const o of [
      "https://example.com", // the wildcard needs a label before it
      "https://evil-example.com",
      "https://evilexample.com",
      "https://example.com.evil.net",
      "https://a.example.com.evil.net",
      "https://a.example.com.", // trailing dot
      "http://a.example.com", // scheme
      "https://a.example.com:8443", // port
      "http://x.dev.test", // port missing
      "https://evil.com@a.example.com",
      "https://a..example.com",
      "https://.example.com",
      "https://APP.example.com", // browsers send lower case; others are not matched
      "null",
      "",
    ]
  ) assert.equal(originAllowed(p, o), false, o);
  const any = compileCors(spec({ allow_origins: ["*"] }));
  assert.ok(originAllowed(any, "https://anything.test"));
});

Deno.test("allow_origin_regex matches the whole origin, after the exact entries", () => {
  const p = compileCors(spec({
    allow_origins: ["https://app.example.com"],
    allow_origin_regex: [
      String.raw`http://(localhost|127\.0\.0\.1):\d+`,
      "(?i)https://pr-[0-9]+\\.dev",
    ],
  }));
  assert.ok(originAllowed(p, "https://app.example.com"));
  assert.ok(originAllowed(p, "http://localhost:5173"));
  assert.ok(originAllowed(p, "http://127.0.0.1:3000"));
  assert.ok(originAllowed(p, "https://PR-12.dev")); // Rust-style inline flags, as in conditions
  for (
    const o of [
      "http://localhost:5173.evil.net", // anchored at the end
      "https://evil.net/http://localhost:1", // and at the start
      "http://localhost",
      "http://127x0x0x1:80",
    ]
  ) assert.equal(originAllowed(p, o), false, o);
  assert.match(originRegex("(a") as string, /^Invalid regular expression \/\(a\/: /);
});

Deno.test("unescapedDot finds a . that matches any character", () => {
  assert.equal(unescapedDot("https://app.example.com"), 11);
  assert.equal(unescapedDot(String.raw`https://app\.example\.com`), undefined);
  assert.equal(unescapedDot(String.raw`https://.*\.example\.com`), undefined);
  assert.equal(unescapedDot(String.raw`https://[a-z.]+\.example\.com`), undefined);
});

Deno.test("strangerAdmitted names an origin nobody lists that a regex admits", () => {
  const re = (s: string) => originRegex(s) as RegExp;
  assert.equal(strangerAdmitted(re(".*")), "https://attacker.invalid");
  assert.equal(strangerAdmitted(re("https?://.+")), "https://attacker.invalid");
  assert.equal(strangerAdmitted(re("http://.*")), "http://attacker.invalid");
  assert.equal(strangerAdmitted(re("null|https://app\\.example\\.com")), "null");
  for (const ok of ["http://(localhost|127\\.0\\.0\\.1):\\d+", "https://.*\\.example\\.com"]) {
    assert.equal(strangerAdmitted(re(ok)), undefined, ok);
  }
});

Deno.test("preflightFields echoes the origin, lists or echoes methods and headers", () => {
  const p = compileCors(spec({
    allow_origins: ["https://app.example.com"],
    allow_headers: ["Content-Type", "Authorization"],
    allow_credentials: true,
    max_age: 600_500,
  }));
  assert.deepEqual(
    preflightFields(p, { origin: "https://app.example.com", method: "PUT", headers: "x-y" }),
    [
      ["access-control-allow-origin", "https://app.example.com"],
      ["access-control-allow-credentials", "true"],
      ["access-control-allow-methods", "GET, POST, PUT"],
      ["access-control-allow-headers", "Content-Type, Authorization"],
      ["access-control-max-age", "600"],
    ],
  );
  assert.equal(preflightVary(p), "Origin, Access-Control-Request-Method");
  const echo = compileCors(spec({
    allow_origins: ["*"],
    allow_methods: ["*"],
    allow_headers: ["*"],
  }));
  assert.deepEqual(
    preflightFields(echo, {
      origin: "https://x.test",
      method: "PATCH",
      headers: " content-type, x-trace ",
    }),
    [
      ["access-control-allow-origin", "*"],
      ["access-control-allow-methods", "PATCH"],
      ["access-control-allow-headers", "content-type, x-trace"],
    ],
  );
  assert.equal(
    preflightVary(echo),
    "Access-Control-Request-Method, Access-Control-Request-Headers",
  );
  // Nothing that is not a token list is echoed.
  assert.deepEqual(
    preflightFields(echo, { origin: "https://x.test", method: "GE T", headers: "a b, c" }),
    [["access-control-allow-origin", "*"]],
  );
});

Deno.test("responseFields and variesByOrigin for actual requests", () => {
  const p = compileCors(spec({
    allow_origins: ["https://app.example.com"],
    expose_headers: ["X-Request-Id", "Content-Disposition"],
    allow_credentials: true,
  }));
  assert.deepEqual(responseFields(p, "https://app.example.com"), [
    ["access-control-allow-origin", "https://app.example.com"],
    ["access-control-allow-credentials", "true"],
    ["access-control-expose-headers", "X-Request-Id, Content-Disposition"],
  ]);
  assert.equal(variesByOrigin(p), true);
  const any = compileCors(spec({ allow_origins: ["*", "https://app.example.com"] }));
  assert.deepEqual(responseFields(any, "https://app.example.com"), [
    ["access-control-allow-origin", "*"],
  ]);
  assert.equal(variesByOrigin(any), false);
});

Deno.test("isPreflight needs OPTIONS, Origin and Access-Control-Request-Method", () => {
  const h = (o: Record<string, string>) => new Headers(o);
  const full = { origin: "https://a.test", "access-control-request-method": "PUT" };
  assert.ok(isPreflight("OPTIONS", h(full)));
  assert.equal(isPreflight("GET", h(full)), false);
  assert.equal(isPreflight("OPTIONS", h({ origin: "https://a.test" })), false);
  assert.equal(isPreflight("OPTIONS", h({ "access-control-request-method": "PUT" })), false);
});

Deno.test("mergeVary adds a name once and leaves * alone", () => {
  assert.equal(mergeVary(null, "Origin"), "Origin");
  assert.equal(mergeVary("", "Origin"), "Origin");
  assert.equal(mergeVary("Accept-Encoding", "Origin"), "Accept-Encoding, Origin");
  assert.equal(mergeVary("accept-encoding, origin", "Origin"), "accept-encoding, origin");
  assert.equal(mergeVary("*", "Origin"), "*");
});

Deno.test("suffixAdmitted finds another site an origin regex admits after its host, and none for a host that ends", () => {
  const probe = (src: string) => suffixAdmitted(originRegex(src) as RegExp, src);
  assert.equal(probe(String.raw`https://example\.com.*`), "https://example.com.attacker.invalid");
  assert.equal(
    probe(String.raw`https://app\.example\.com\S*`),
    "https://app.example.com.attacker.invalid",
  );
  assert.equal(probe(String.raw`https://([a-z0-9-]+\.)?example\.com(:\d+)?`), undefined);
  assert.equal(probe(String.raw`https://.*\.example\.com`), undefined);
  assert.equal(probe(String.raw`http://(localhost|127\.0\.0\.1):\d+`), undefined);
});
