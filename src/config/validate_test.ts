import assert from "node:assert/strict";
import { loadConfigText } from "./load.ts";

const BASE = `listen_addr: "127.0.0.1:8443"
health_check: { enabled: false }
routes: { "/": { type: proxy, target: "http://127.0.0.1:3000" } }
`;

/** The warnings `prox validate` gives for BASE plus `yaml`. */
const warnings = (yaml: string) =>
  loadConfigText(BASE + yaml, { file: "c.yaml", env: { exists: () => true } }).issues
    .filter((i) => i.severity === "warning").map((i) => `${i.path}: ${i.message}`);

Deno.test("validateConfig: Prox's engines serve TLS listeners too, and honour the HTTP/2 keys", () => {
  const tls = "tls: { cert_path: c.pem, key_path: k.pem }\n";
  const h2 = "http2_enabled: false, http2_max_frame_size: 32768, http2_max_concurrent_streams: 50";
  // On the engines (the default, or asked for) the HTTP/2 keys apply: no warning.
  assert.deepEqual(warnings(`${tls}protocols: { http1_engine: prox }\n`), []);
  assert.deepEqual(warnings(`${tls}protocols: { ${h2} }\n`), []);
  assert.deepEqual(warnings(`${tls}protocols: { http1_idle_timeout: 10m }\n`), []);
  // On Deno.serve they do not, and each says so.
  const onDeno = warnings(`${tls}protocols: { http1_engine: deno, ${h2} }\n`).join("\n");
  assert.match(onDeno, /http2_enabled: false has no effect with http1_engine: deno/);
  assert.match(onDeno, /http2_max_frame_size has no effect with http1_engine: deno/);
  assert.match(onDeno, /http2_max_concurrent_streams has no effect with http1_engine: deno/);
  assert.equal(onDeno.split("\n").length, 3, onDeno);
});

Deno.test("validateConfig warns about http1_idle_timeout where the engine does not serve", () => {
  const said = warnings("protocols: { http1_engine: deno, http1_idle_timeout: 10m }\n");
  assert.equal(said.length, 1);
  assert.match(said[0], /^protocols\.http1_idle_timeout: http1_idle_timeout has no effect here/);
  assert.deepEqual(warnings("protocols: { http1_idle_timeout: 10m }\n"), []);
  const header = warnings("protocols: { http1_engine: deno, http1_header_timeout: 10s }\n");
  assert.match(header[0], /^protocols\.http1_header_timeout: http1_header_timeout has no effect/);
});

Deno.test("validateConfig: accept_proxy_protocol takes addresses or blocks, on Prox's engine only", () => {
  const issues = (yaml: string) =>
    loadConfigText(BASE + yaml, { file: "c.yaml", env: { exists: () => true } }).issues
      .map((i) => `${i.severity} ${i.path}: ${i.message}${i.hint ? ` (${i.hint})` : ""}`);
  assert.deepEqual(issues(`accept_proxy_protocol: { from: ["10.0.0.0/8", "::1"] }\n`), []);
  const bad = issues(`accept_proxy_protocol: { from: ["10.0.0.0/33"] }\n`).join("\n");
  assert.match(bad, /^error accept_proxy_protocol\.from\.0: Invalid CIDR "10\.0\.0\.0\/33"/);
  const deno = issues(
    `accept_proxy_protocol: { from: ["10.0.0.1"] }\nprotocols: { http1_engine: deno }\n`,
  ).join("\n");
  assert.match(deno, /^error accept_proxy_protocol: accept_proxy_protocol needs Prox's own engine/);
  assert.match(deno, /Remove protocols\.http1_engine: deno/);
  const empty = issues(`accept_proxy_protocol: { from: [] }\n`).join("\n");
  assert.match(empty, /^error accept_proxy_protocol\.from/);
});

Deno.test("validateConfig: a tcp entry's accept_proxy_protocol takes addresses or blocks, on either engine", () => {
  const issues = (yaml: string) =>
    loadConfigText(BASE + yaml, { file: "c.yaml", env: { exists: () => true } }).issues
      .map((i) => `${i.severity} ${i.path}: ${i.message}`);
  const entry = (from: string) =>
    `tcp:\n  db:\n    listen_addr: "127.0.0.1:5433"\n    targets: ["10.0.0.5:5432"]\n` +
    `    accept_proxy_protocol: { from: ${from} }\n`;
  // The tcp listener reads the header itself: Deno.serve's engine is no matter.
  assert.deepEqual(
    issues(entry(`["10.0.0.0/8", "::1"]`) + "protocols: { http1_engine: deno }\n"),
    [],
  );
  assert.deepEqual(issues(entry(`["10.0.0.0/33"]`)), [
    'error tcp.db.accept_proxy_protocol.from.0: Invalid CIDR "10.0.0.0/33"',
  ]);
  assert.match(issues(entry("[]")).join("\n"), /^error tcp\.db\.accept_proxy_protocol\.from/);
  // As the top-level one: a block of every address lets any client name its own.
  const all = issues(entry(`["0.0.0.0/0", "::/0"]`)).join("\n");
  assert.match(
    all,
    /^warning tcp\.db\.accept_proxy_protocol\.from\.0: "0\.0\.0\.0\/0" trusts every IPv4 client/m,
  );
  assert.match(
    all,
    /^warning tcp\.db\.accept_proxy_protocol\.from\.1: "::\/0" trusts every IPv6 client/m,
  );
});

Deno.test("validateConfig refuses a route key with a dot segment: requests never hold one", () => {
  const issues = (key: string) =>
    loadConfigText(
      `listen_addr: "127.0.0.1:8443"\nroutes: { "${key}": { type: redirect, target: "https://x" } }\n`,
      { file: "c.yaml", env: { exists: () => true } },
    ).issues.map((i) => `${i.line}:${i.col} ${i.path}: ${i.message} (${i.hint})`);
  // `prox explain` showed it: "prefix /a/../b does not match path /b", whatever was asked.
  assert.deepEqual(issues("/a/../b"), [
    '2:11 routes./a/../b: Route "/a/../b" has a dot segment (. or ..): request paths arrive ' +
    'with them resolved, so it never matches (Write "/b")',
  ]);
  assert.deepEqual(issues("example.com/a/./b/"), [
    '2:11 routes.example.com/a/./b/: Route "example.com/a/./b/" has a dot segment (. or ..): ' +
    'request paths arrive with them resolved, so it never matches (Write "example.com/a/b/")',
  ]);
  assert.equal(issues("/a/%2e%2E/b").length, 1);
  assert.deepEqual(issues("/a/.well-known/..x"), []);
});

Deno.test("validateConfig refuses an empty tls.acme.storage_path (the ACME key went to /)", () => {
  const issues = loadConfigText(
    BASE + "tls:\n  acme: { enabled: true, domains: [a.example], email: a@a.example, " +
      'storage_path: "", http_listen_addr: "0.0.0.0:80" }\n',
    { file: "c.yaml", env: { exists: () => true } },
  ).issues.map((i) => `${i.severity} ${i.line}:${i.col} ${i.path}: ${i.message}`);
  // "" + "/account.key" is /account.key: the account key and challenges at the file system's root.
  assert.deepEqual(issues, ["error 5:68 tls.acme.storage_path: Cannot be empty"]);
});

Deno.test("validateConfig says an empty cert_path or key_path is empty, not set and missing at once", () => {
  const issues = loadConfigText(BASE + 'tls: { cert_path: "", key_path: "" }\n', {
    file: "c.yaml",
    env: { exists: () => true },
  }).issues.map((i) => `${i.line}:${i.col} ${i.path}: ${i.message}`);
  // It said both "key_path is set but cert_path is missing" and "cert_path is set but key_path
  // is missing", at the tls key.
  assert.deepEqual(issues, [
    "4:8 tls.cert_path: Cannot be empty",
    "4:23 tls.key_path: Cannot be empty",
  ]);
});

Deno.test("validateConfig refuses a tls.acme.ca_cert that is a directory or holds no PEM certificate", async () => {
  const { denoEnv } = await import("../adapters/config_source.ts");
  const dir = await Deno.makeTempDir({ prefix: "prox-acme-ca-" });
  await Deno.writeTextFile(`${dir}/notes.txt`, "not a certificate\n");
  const issues = (ca: string) =>
    loadConfigText(
      BASE + "tls:\n  acme: { enabled: true, domains: [a.example], email: a@a.example, " +
        `http_listen_addr: "0.0.0.0:80", ca_cert: "${ca}" }\n`,
      { file: "c.yaml", env: denoEnv },
    ).issues.filter((i) => i.severity === "error").map((i) => `${i.path}: ${i.message}`);
  try {
    // Both were valid; the ACME directory's certificate was then never trusted (no certificate).
    assert.deepEqual(issues(dir), [
      `tls.acme.ca_cert: CA certificate ${dir} is a directory, not a PEM file`,
    ]);
    assert.deepEqual(issues(`${dir}/notes.txt`), [
      `tls.acme.ca_cert: ${dir}/notes.txt holds no PEM certificate (-----BEGIN CERTIFICATE-----): ` +
      "the ACME server's certificate would be rejected",
    ]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("validateConfig warns when trusted_proxies or accept_proxy_protocol.from trust every client", () => {
  const said = (yaml: string) =>
    loadConfigText(BASE + yaml, { file: "c.yaml", env: { exists: () => true } }).issues
      .map((i) => `${i.file}:${i.line}:${i.col}: ${i.severity}: ${i.path}: ${i.message}`);
  // No word: every client could write its own address into X-Forwarded-For.
  const all = said(`trusted_proxies: ["10.0.0.0/8", "0.0.0.0/0", "::/0", "::ffff:0.0.0.0/96"]\n`);
  assert.equal(all.length, 3, all.join("\n"));
  assert.match(
    all[0],
    /^c\.yaml:4:33: warning: trusted_proxies\.1: "0\.0\.0\.0\/0" trusts every IPv4 client: each can set its own address through X-Forwarded-For/,
  );
  assert.match(
    all[1],
    /^c\.yaml:4:46: warning: trusted_proxies\.2: "::\/0" trusts every IPv6 client/,
  );
  assert.match(all[2], /^c\.yaml:4:54: warning: trusted_proxies\.3: .* every IPv4 client/);
  const proxy = said(`accept_proxy_protocol: { from: ["0.0.0.0/0"] }\n`);
  assert.equal(proxy.length, 1, proxy.join("\n"));
  assert.match(
    proxy[0],
    /^c\.yaml:4:33: warning: accept_proxy_protocol\.from\.0: "0\.0\.0\.0\/0" trusts every IPv4 client: each can set its own address through a PROXY protocol header/,
  );
  // Blocks of some size are what load balancers and CDNs have: no warning.
  assert.deepEqual(
    said(`trusted_proxies: ["10.0.0.0/8", "104.16.0.0/13", "2400:cb00::/32", "fc00::/7"]\n`),
    [],
  );
});

Deno.test("validateConfig: DNS-01 needs one way to publish its record, and opens wildcards", () => {
  const issues = (acme: string, env: Record<string, string> = {}) =>
    loadConfigText(
      BASE + "tls:\n  acme:\n    enabled: true\n    email: a@a.example\n" + acme,
      { file: "c.yaml", env: { exists: () => true, env: (n) => env[n] } },
    ).issues.map((i) => `${i.severity} ${i.path}: ${i.message}${i.hint ? ` (${i.hint})` : ""}`);
  const hook = "    challenge: dns-01\n    dns: { webhook: https://dns.internal/acme }\n";
  // A wildcard with DNS-01: no error, and no warning about a missing port 80 listener.
  assert.deepEqual(issues(`    domains: [a.example, "*.a.example"]\n${hook}`), []);
  // Without it, the error says what to set.
  const http01 = issues(`    domains: ["*.a.example"]\n    http_listen_addr: "0.0.0.0:80"\n`);
  assert.equal(http01.length, 1);
  assert.match(
    http01[0],
    /^error tls\.acme\.domains\.0: Wildcard domain "\*\.a\.example" needs the DNS-01 challenge.*\(Set challenge: dns-01/,
  );
  assert.match(issues(`    domains: ["*.*.a.example"]\n${hook}`).join(), /Invalid wildcard domain/);
  // dns-01 without dns, or with both ways, or neither.
  assert.match(
    issues("    domains: [a.example]\n    challenge: dns-01\n").join(),
    /^error tls\.acme\.challenge: challenge: dns-01 needs a dns: section/,
  );
  const both = "    challenge: dns-01\n    dns: { webhook: https://h/x, command: [/bin/hook] }\n";
  assert.match(
    issues(`    domains: [a.example]\n${both}`).join(),
    /^error tls\.acme\.dns: DNS-01 publishes its TXT record through a webhook or a command: give exactly one/,
  );
  // Bad webhook URL, resolvers, timeout, and an unset token variable.
  const bad = issues(
    "    domains: [a.example]\n    challenge: dns-01\n" +
      '    dns: { webhook: "ftp://x", resolvers: ["10.0.0.53:53", "ns1.example", "[::1]:70000"], ' +
      "propagation_timeout: 0s, token_env: NO_SUCH_VAR }\n",
  );
  assert.deepEqual(
    bad.map((l) => l.replace(/ \(.*$/, "")),
    // In the order of the file.
    [
      'error tls.acme.dns.webhook: Webhook URL "ftp://x" is not an http(s) URL',
      'error tls.acme.dns.resolvers.1: DNS resolver "ns1.example" is not an IP address with an optional port',
      'error tls.acme.dns.resolvers.2: DNS resolver "[::1]:70000" is not an IP address with an optional port',
      "error tls.acme.dns.propagation_timeout: propagation_timeout must be longer than 0s",
      "error tls.acme.dns.token_env: Environment variable NO_SUCH_VAR is not set",
    ],
  );
  assert.deepEqual(
    issues(
      "    domains: [a.example]\n    challenge: dns-01\n    dns: { webhook: https://h/x, token_env: T }\n",
      { T: "x" },
    ),
    [],
  );
  // dns beside http-01 does nothing; headers beside a command are not sent anywhere.
  assert.match(
    issues(
      `    domains: [a.example]\n    http_listen_addr: "0.0.0.0:80"\n    dns: { command: [/bin/hook] }\n`,
    ).join(),
    /^warning tls\.acme\.dns: dns has no effect with challenge: http-01/,
  );
  assert.match(
    issues(
      "    domains: [a.example]\n    challenge: dns-01\n    dns: { command: [/bin/hook], headers: { A: b } }\n",
    ).join(),
    /^warning tls\.acme\.dns\.headers: headers, token_env and ca_cert are for the webhook only/,
  );
});

Deno.test("validateConfig: DNS-01 webhook headers that fetch would refuse at every order are errors at load", () => {
  const issues = (dns: string) =>
    loadConfigText(
      BASE + "tls:\n  acme:\n    enabled: true\n    email: a@a.example\n" +
        `    domains: [a.example]\n    challenge: dns-01\n    dns: ${dns}\n`,
      { file: "c.yaml", env: { exists: () => true, env: () => undefined } },
    ).issues.map((i) => `${i.severity} ${i.path}: ${i.message}`);
  assert.deepEqual(
    issues('{ webhook: https://h/x, headers: { "X Api Key": k, X-Ok: "a\\nb" } }'),
    [
      'error tls.acme.dns.headers.X Api Key: "X Api Key" is not a valid header name',
      "error tls.acme.dns.headers.X-Ok: The value of header X-Ok contains a line break or NUL",
    ],
  );
  assert.deepEqual(issues('{ webhook: https://h/x, headers: { X-Api-Key: "k" } }'), []);
});

Deno.test("validateConfig: an ACME domain in Unicode or with a trailing dot gets the form to write instead", () => {
  const issues = (domains: string) =>
    loadConfigText(
      BASE + "tls:\n  acme:\n    enabled: true\n    email: a@a.example\n" +
        `    domains: ${domains}\n    challenge: dns-01\n    dns: { webhook: https://h/x }\n`,
      { file: "c.yaml", env: { exists: () => true, env: () => undefined } },
    ).issues.map((i) => `${i.severity} ${i.path}: ${i.message} (${i.hint})`);
  assert.deepEqual(issues('["bücher.example", "*.bücher.example", "a.example."]'), [
    'error tls.acme.domains.0: Invalid domain name "bücher.example" (Write it in its ASCII (punycode) form: xn--bcher-kva.example)',
    'error tls.acme.domains.1: Invalid wildcard domain "*.bücher.example" (Write it in its ASCII (punycode) form: *.xn--bcher-kva.example)',
    'error tls.acme.domains.2: Invalid domain name "a.example." (Write it without the trailing dot: a.example)',
  ]);
});

Deno.test("validateConfig: a DNS-01 command that is not there is an error at load, not at the first order", () => {
  const issues = (command: string) =>
    loadConfigText(
      BASE + "tls:\n  acme:\n    enabled: true\n    email: a@a.example\n" +
        `    domains: [a.example]\n    challenge: dns-01\n    dns: { command: ${command} }\n`,
      {
        file: "c.yaml",
        env: { exists: (p) => p === "/usr/local/bin/dns-hook", env: () => undefined },
      },
    ).issues.map((i) => `${i.severity} ${i.path}: ${i.message}`);
  assert.deepEqual(issues("[/usr/local/bin/dns-hok, --zone, x]"), [
    "error tls.acme.dns.command.0: DNS command /usr/local/bin/dns-hok does not exist",
  ]);
  assert.deepEqual(issues('[""]'), ["error tls.acme.dns.command.0: The DNS command is empty"]);
  assert.deepEqual(issues("[/usr/local/bin/dns-hook]"), []);
  // A bare name is looked up in PATH when it runs.
  assert.deepEqual(issues("[dns-hook]"), []);
});

Deno.test("validateConfig: a DNS-01 token_env set to nothing is an error at load (every order would fail on it)", () => {
  const issues = loadConfigText(
    BASE + "tls:\n  acme:\n    enabled: true\n    email: a@a.example\n" +
      "    domains: [a.example]\n    challenge: dns-01\n    dns: { webhook: https://h/x, token_env: T }\n",
    { file: "c.yaml", env: { exists: () => true, env: (n) => n === "T" ? "" : undefined } },
  ).issues.map((i) => `${i.severity} ${i.path}: ${i.message}`);
  assert.deepEqual(issues, ["error tls.acme.dns.token_env: Environment variable T is empty"]);
});

Deno.test("validateConfig: tls.acme.dns.ca_cert must name a CA file, and is for the webhook only", () => {
  const issues = (dns: string) =>
    loadConfigText(
      BASE +
        `tls:\n  acme:\n    enabled: true\n    email: a@a.example\n    domains: [a.example]\n    challenge: dns-01\n    dns: ${dns}\n`,
      { file: "c.yaml", env: { exists: (p) => p !== "missing.pem" } },
    ).issues.map((i) => `${i.severity} ${i.path}: ${i.message}`);
  assert.deepEqual(issues("{ webhook: https://h/x, ca_cert: ca.pem }"), []);
  assert.deepEqual(issues("{ webhook: https://h/x, ca_cert: missing.pem }"), [
    "error tls.acme.dns.ca_cert: CA certificate file not found: missing.pem",
  ]);
  assert.match(
    issues("{ command: [/bin/true], ca_cert: ca.pem }").join(),
    /^warning tls\.acme\.dns\.ca_cert: headers, token_env and ca_cert are for the webhook only/,
  );
});

Deno.test("validateConfig: tls.acme.eab needs one well-formed MAC key, given or from a set variable", () => {
  const issues = (eab: string) =>
    loadConfigText(
      BASE +
        `tls:\n  acme:\n    enabled: true\n    email: a@a.example\n    domains: [a.example]\n    ca_url: https://ca.example/dir\n    eab: ${eab}\n`,
      {
        file: "c.yaml",
        env: { exists: () => true, env: (n) => ({ K: "zWNDZM6e_Q-G", E: "" })[n] },
      },
    ).issues.map((i) => `${i.severity} ${i.path}: ${i.message}`);
  assert.deepEqual(issues("{ kid: kid-1, hmac_key: zWNDZM6eQGHWpSRT-al5_IUYFTu7 }"), []);
  // Standard base64 with padding, as some CAs show it.
  assert.deepEqual(issues('{ kid: kid-1, hmac_key: "zWND+M6e/Q==" }'), []);
  // Base64url with its padding, as Terraform's google_public_ca_external_account_key gives it.
  assert.deepEqual(issues('{ kid: kid-1, hmac_key: "zWND-M6e_Q==" }'), []);
  assert.deepEqual(issues("{ kid: kid-1, hmac_key_env: K }"), []);
  assert.deepEqual(issues("{ kid: kid-1 }"), [
    "error tls.acme.eab: External account binding needs its MAC key: give exactly one of hmac_key and hmac_key_env",
  ]);
  assert.deepEqual(issues("{ kid: kid-1, hmac_key: abc, hmac_key_env: K }"), [
    "error tls.acme.eab: External account binding needs its MAC key: give exactly one of hmac_key and hmac_key_env",
  ]);
  // A quote or a space copied with the key: acme-client would sign with other bytes.
  assert.deepEqual(issues(`{ kid: kid-1, hmac_key: "'zWNDZM6e'" }`), [
    "error tls.acme.eab.hmac_key: hmac_key is not a base64url MAC key (letters, digits, - and _ only)",
  ]);
  assert.deepEqual(issues('{ kid: kid-1, hmac_key: "" }'), [
    "error tls.acme.eab.hmac_key: hmac_key is empty",
  ]);
  assert.deepEqual(issues("{ kid: kid-1, hmac_key_env: NOPE }"), [
    "error tls.acme.eab.hmac_key_env: Environment variable NOPE is not set",
  ]);
  assert.deepEqual(issues("{ kid: kid-1, hmac_key_env: E }"), [
    "error tls.acme.eab.hmac_key_env: Environment variable E is empty",
  ]);
  assert.match(issues("{ hmac_key: abc }").join(), /^error tls\.acme\.eab\.kid/);
});

Deno.test("validateConfig: tls.acme.redis needs a Redis URL the client can use and a timeout", () => {
  const issues = (redis: string) =>
    loadConfigText(
      BASE +
        `tls:\n  acme:\n    enabled: true\n    email: a@a.example\n    domains: [a.example]\n    ca_url: https://ca.example/dir\n    redis: ${redis}\n`,
      { file: "c.yaml", env: { exists: () => true } },
    ).issues.map((i) => `${i.severity} ${i.path}: ${i.message}`);
  assert.deepEqual(issues('{ url: "rediss://:pw@redis.internal:6380/2" }'), []);
  assert.match(
    issues('{ url: "http://:secret@redis.internal" }').join(),
    /^error tls\.acme\.redis\.url: /,
  );
  assert.ok(!issues('{ url: "http://:secret@redis.internal" }').join().includes("secret"));
  assert.deepEqual(issues('{ url: "redis://h", timeout: 0s }'), [
    "error tls.acme.redis.timeout: timeout must be greater than 0",
  ]);
});

Deno.test("validateConfig: an access_log_filter must name something to log, with valid statuses", () => {
  const errors = (yaml: string) =>
    loadConfigText(BASE + yaml, { file: "c.yaml", env: { exists: () => true } }).issues
      .filter((i) => i.severity === "error").map((i) => `${i.path}: ${i.message}`);
  assert.deepEqual(errors("log: { access_log_filter: { status: [5xx], retried: true } }\n"), []);
  assert.deepEqual(errors("log: { access_log_filter: { min_duration: 1s } }\n"), []);
  assert.deepEqual(errors('log: { access_log_filter: { status: "5xx" } }\n'), []);
  assert.deepEqual(errors("log: { access_log_filter: {} }\n"), [
    "log.access_log_filter: An access_log_filter without status, min_duration, retried: true or failed: true lets no line through",
  ]);
  assert.deepEqual(errors("log: { access_log_filter: { status: [5xy] } }\n"), [
    'log.access_log_filter.status: Cannot read status selector "5xy": use 200, "2xx" or "200-299"',
  ]);
});

Deno.test("validateConcurrency: the key its `by` needs, jwt_auth for claims, valid exempt_ips", () => {
  const issues = (limit: string) =>
    loadConfigText(
      `listen_addr: "127.0.0.1:8443"\nhealth_check: { enabled: false }\nroutes:\n  "/": { type: proxy, target: "http://127.0.0.1:3000", concurrency_limit: ${limit} }\n`,
      { file: "c.yaml", env: { exists: () => true } },
    ).issues.map((i) => `${i.severity} ${i.path}: ${i.message}`);
  assert.deepEqual(issues("{ max: 10 }"), []);
  assert.deepEqual(issues("{ max: 10, by: header }"), [
    "error routes./.concurrency_limit: header_name is required with by: header",
    "warning routes./.concurrency_limit.by: Requests without the header are not limited (on_missing_key: allow)",
  ]);
  assert.deepEqual(issues("{ max: 10, by: jwt_claim, claim: sub }"), [
    "error routes./.concurrency_limit.by: by: jwt_claim needs jwt_auth on the route: there is no token to read the claim from",
  ]);
  assert.deepEqual(issues('{ max: 10, header_name: X-Key, exempt_ips: ["10.0.0.0/33"] }'), [
    "warning routes./.concurrency_limit.header_name: header_name is ignored with by: ip",
    'error routes./.concurrency_limit.exempt_ips.0: Invalid CIDR "10.0.0.0/33"',
  ]);
  assert.deepEqual(issues("{ max: 10, by: cookie, cookie_name: s }"), [
    "warning routes./.concurrency_limit.by: Requests without the cookie are not limited (on_missing_key: allow)",
  ]);
});

Deno.test("validateAccess: ip_access list files must exist and hold one entry per line", () => {
  const files: Record<string, string> = { "block.txt": "# ok\n10.0.0.0/8\n\nbogus\n" };
  const issues = (ip: string) =>
    loadConfigText(BASE + `ip_access: ${ip}\n`, {
      file: "c.yaml",
      env: { exists: (p) => p in files, readText: (p) => ({ text: files[p] }) },
    }).issues.map((i) => `${i.severity} ${i.path}: ${i.message}`);
  assert.deepEqual(issues("{ deny_file: block.txt }"), [
    'error ip_access.deny_file: block.txt:4: Invalid address or CIDR block "bogus"',
  ]);
  assert.deepEqual(issues("{ allow_file: [block.txt, gone.txt] }"), [
    'error ip_access.allow_file.0: block.txt:4: Invalid address or CIDR block "bogus"',
    "error ip_access.allow_file.1: List file not found: gone.txt",
  ]);
});

Deno.test("validateAccess: an allow_file list that holds no entry at all is an error", () => {
  const files: Record<string, string> = { "empty.txt": "# nothing\n", "one.txt": "10.0.0.1\n" };
  const issues = (ip: string) =>
    loadConfigText(BASE + `ip_access: ${ip}\n`, {
      file: "c.yaml",
      env: { exists: (p) => p in files, readText: (p) => ({ text: files[p] }) },
    }).issues.map((i) => `${i.severity} ${i.path}: ${i.message}`);
  assert.deepEqual(issues("{ allow_file: empty.txt }"), [
    "error ip_access.allow_file: empty.txt holds no entry: an allow list of none would refuse every client",
  ]);
  // Entries elsewhere in the allow list: an empty file among them is fine, and so is a deny file.
  assert.deepEqual(issues("{ allow_file: [empty.txt, one.txt] }"), []);
  assert.deepEqual(issues('{ allow_file: empty.txt, allow: ["10.0.0.2"] }'), []);
  assert.deepEqual(issues("{ deny_file: empty.txt }"), []);
});

Deno.test("validateAccess: a list file named many times is read once, and its bad lines told once, at most 10", () => {
  const bad = Array.from({ length: 1_000 }, (_, i) => `host-${i}.example\n`).join("");
  const files: Record<string, string> = { "feed.txt": "10.0.0.0/8\n", "bad.txt": bad };
  const reads: string[] = [];
  const issues = (yaml: string) =>
    loadConfigText(BASE.replace(/^routes:.*\n/m, "") + yaml, {
      file: "c.yaml",
      env: {
        exists: (p) => p in files,
        readText: (p) => (reads.push(p), { text: files[p] }),
      },
    }).issues.map((i) => `${i.path}: ${i.message}`);
  const routes = [1, 2, 3].map((i) =>
    `  "/r${i}": { type: proxy, target: "http://127.0.0.1:1", ip_access: { deny_file: feed.txt } }`
  ).join("\n");
  assert.deepEqual(issues(`ip_access: { deny_file: feed.txt }\nroutes:\n${routes}\n`), []);
  assert.deepEqual(reads, ["feed.txt"]);
  const out = issues(
    `ip_access: { deny_file: bad.txt }\nroutes:\n${routes.replaceAll("feed", "bad")}\n`,
  );
  assert.equal(out.length, 11, out.slice(0, 3).join("\n"));
  assert.equal(
    out[0],
    'ip_access.deny_file: bad.txt:1: Invalid address or CIDR block "host-0.example"',
  );
  assert.equal(out[10], "ip_access.deny_file: bad.txt: 990 more lines are no entry");
});

Deno.test("validateConfig warns of a path_regex match holding a character paths carry percent-encoded", () => {
  const said = loadConfigText(
    `listen_addr: "127.0.0.1:8443"
health_check: { enabled: false }
routes:
  /:
    type: proxy
    target: "http://127.0.0.1:3000"
    path_regex: { match: "^/über/(.*)$", replace: "/uber/$1" }
`,
    { file: "c.yaml", env: { exists: () => true } },
  ).issues.filter((i) => i.severity === "warning").map((i) => `${i.path}: ${i.message}`);
  // `/über/x` arrives as /%C3%BCber/x: the rule never applied and the path went upstream as it came.
  assert.deepEqual(said, [
    'routes./.path_regex.match: path_regex holds "ü", which request paths carry percent-encoded ' +
    "as UTF-8 (%C3%BC): the regex never matches it there",
  ]);
});

Deno.test("validateConfig warns about a bandwidth rate below 1 KiB per second (bytes, not KiB)", () => {
  const said = (rate: string) =>
    loadConfigText(
      `listen_addr: "127.0.0.1:8443"\nhealth_check: { enabled: false }\nroutes:\n` +
        `  /dl: { type: proxy, target: "http://127.0.0.1:3000", bandwidth: { rate: ${rate} } }\n`,
      { file: "c.yaml", env: { exists: () => true } },
    ).issues.map((i) => `${i.severity} ${i.path}: ${i.message} (${i.hint})`);
  assert.deepEqual(said("512"), [
    "warning routes./dl.bandwidth.rate: bandwidth rate 512 is 512 bytes per second: a 1 MiB " +
    "answer takes 34 minutes (Write a unit if more was meant, e.g. 512KiB)",
  ]);
  assert.deepEqual(said("2KiB"), []);
});

Deno.test("validateConfig warns when a bandwidth rate is too slow for the route's timeouts.idle", () => {
  // An upstream read (up to 64 KiB) that the client takes longer than timeouts.idle to read
  // ends the download ("the client read none of the response"), paced or not.
  const said = (route: string, top = "") =>
    loadConfigText(
      `listen_addr: "127.0.0.1:8443"\nhealth_check: { enabled: false }\n${top}routes:\n` +
        `  /dl: { type: proxy, target: "http://127.0.0.1:3000", ${route} }\n`,
      { file: "c.yaml", env: { exists: () => true } },
    ).issues.map((i) => `${i.severity} ${i.path}: ${i.message} (${i.hint})`);
  assert.deepEqual(said("bandwidth: { rate: 16KiB }, timeouts: { idle: 2s }"), [
    "warning routes./dl.bandwidth.rate: At 16 KiB/s one upstream read of up to 64 KiB takes 4 s " +
    "to send, longer than timeouts.idle (2 s), which then ends the download as a client that " +
    "read nothing (Raise timeouts.idle above 4 s, or the rate)",
  ]);
  assert.equal(said("bandwidth: { rate: 16KiB }", "timeouts: { idle: 3s }\n").length, 1);
  assert.deepEqual(said("bandwidth: { rate: 16KiB }, timeouts: { idle: 5s }"), []);
  assert.deepEqual(said("bandwidth: { rate: 16KiB }, timeouts: { idle: 0s }"), []);
  // The default idle (60 s) is enough from about 1.1 KiB/s.
  assert.deepEqual(said("bandwidth: { rate: 2KiB }"), []);
  assert.equal(said("bandwidth: { rate: 1KiB }").length, 1);
});

Deno.test("validateConfig warns that tls.ca_cert does nothing beside insecure_skip_verify: true", () => {
  const route = (tls: string) =>
    `  "/api": { type: proxy, target: "https://10.0.0.7:8443", tls: { ${tls} } }\n`;
  const said = (tls: string) =>
    loadConfigText(
      `listen_addr: "127.0.0.1:8443"\nhealth_check: { enabled: false }\nroutes:\n${route(tls)}`,
      { file: "c.yaml", env: { exists: () => true } },
    ).issues.filter((i) => i.severity === "warning").map((i) => `${i.path}: ${i.message}`);
  // A CA added while skip-verify stayed on: nothing is verified, whatever the CA says.
  assert.deepEqual(said("ca_cert: ca.pem, insecure_skip_verify: true"), [
    "routes./api.tls.insecure_skip_verify: tls.ca_cert is not used: insecure_skip_verify: true " +
    "accepts any certificate",
  ]);
  assert.deepEqual(said("ca_cert: ca.pem"), []);
  assert.deepEqual(said("insecure_skip_verify: true"), []);
});

Deno.test("validateConfig: tls.acme.on_demand needs an http(s) ask endpoint and Prox's engines", () => {
  const issues = (onDemand: string, extra = "") =>
    loadConfigText(
      BASE + extra +
        "tls:\n  acme:\n    enabled: true\n    domains: [a.example]\n" +
        `    http_listen_addr: "0.0.0.0:80"\n    on_demand:\n${onDemand}`,
      { file: "c.yaml", env: { exists: () => true } },
    ).issues.map((i) => `${i.file}:${i.line}:${i.col}: ${i.severity} ${i.path}: ${i.message}`);
  assert.deepEqual(issues('      ask: "http://127.0.0.1:9000/allowed"\n'), []);
  assert.deepEqual(
    issues(
      '      ask: "https://auth.internal/allowed"\n      max_certificates: 10\n' +
        "      rate: { orders: 5, per: 1m }\n      timeout: 20s\n      ask_timeout: 2s\n",
    ),
    [],
  );
  // Without ask: refused, as anyone could make Prox order any name.
  const none = issues("      max_certificates: 10\n");
  assert.equal(none.length, 1, none.join("\n"));
  assert.match(
    none[0],
    /^c\.yaml:9:5: error tls\.acme\.on_demand: on_demand needs an ask endpoint/,
  );
  assert.match(
    issues('      ask: "ftp://x/allowed"\n').join(),
    /^c\.yaml:10:7: error tls\.acme\.on_demand\.ask: ask URL "ftp:\/\/x\/allowed" is not an http\(s\) URL/,
  );
  assert.match(issues('      ask: "not a url"\n').join(), /is not an http\(s\) URL/);
  // Bounds and shapes come from the schema.
  assert.match(
    issues('      ask: "http://h/a"\n      max_certificates: 0\n').join(),
    /tls\.acme\.on_demand\.max_certificates/,
  );
  assert.match(issues('      ask: "http://h/a"\n      rate: { orders: 5 }\n').join(), /per/);
  // Deno's HTTP server reads no ClientHello: refused; HTTP/3 serves the main certificate only.
  assert.match(
    issues('      ask: "http://h/a"\n', "protocols: { http1_engine: deno }\n").join(),
    /error tls\.acme\.on_demand: tls\.acme\.on_demand needs Prox's own engines/,
  );
  assert.match(
    issues('      ask: "http://h/a"\n', "protocols: { http3_enabled: true }\n").join(),
    /warning tls\.acme\.on_demand: HTTP\/3 serves only the main certificate/,
  );
});
