import assert from "node:assert/strict";
import { parseConfig } from "./parse.ts";
import { formatIssue, loadConfigText } from "./load.ts";
import { PassiveHealth } from "./schema_route.ts";

const HEAD = 'listen_addr: "127.0.0.1:3000"\nroutes:\n';

/** The issues as `prox validate` prints them, without excerpts. */
function problems(text: string): string[] {
  return parseConfig(text, "c.yaml").issues.map((i) => formatIssue({ ...i, excerpt: undefined }));
}

Deno.test("parseConfig says what is wrong with a target's host or port", () => {
  const at = (target: string) =>
    problems(`${HEAD}  /:\n    type: proxy\n    target: "${target}"\n`).join("\n");
  assert.equal(
    at("http://::1:8080"),
    'c.yaml:5:5: error: routes./.target: Invalid URL "http://::1:8080": put the IPv6 address in ' +
      "brackets, e.g. http://[::1]:8080",
  );
  assert.match(at("http://[fe80::1%25eth0]:80"), /an IPv6 zone id \(%eth0\) cannot be written/);
  assert.match(at("http://[::1:80"), /the IPv6 address has no closing bracket/);
  assert.match(at("https://backend:99999"), /the port "99999" is not a number from 1 to 65535/);
  assert.match(at("htp//backend"), /use an absolute URL starting with http:\/\//);
  const ws = problems(`${HEAD}  /:\n    type: websocket\n    target: "ws://::1:9000"\n`);
  assert.match(ws.join(), /Invalid WebSocket URL "ws:\/\/::1:9000": put the IPv6 address in/);
});

Deno.test("validate: a route host with non-ASCII letters gets its ASCII form; a trailing dot is the host", () => {
  const issues = (routes: string) =>
    loadConfigText(`${HEAD}${routes}`, { file: "c.yaml", env: { exists: () => true } }).issues
      .map(formatIssue);
  assert.deepEqual(
    issues('  "bücher.example/a": { type: static, root: . }\n'),
    [
      'c.yaml:3:3: error: routes.bücher.example/a: Route "bücher.example/a" has a host with ' +
      'non-ASCII letters; clients send it as "xn--bcher-kva.example"\n' +
      '  fix: Write "xn--bcher-kva.example/a"',
    ],
  );
  assert.match(
    issues('  /: { type: static, root: ., hosts: ["*.bücher.example"] }\n').join(),
    /fix: Write "\*\.xn--bcher-kva\.example"/,
  );
  // The router reads "example.com." as example.com: the two routes are one.
  assert.match(
    issues(
      '  "example.com./a": { type: static, root: . }\n' +
        '  /a: { type: static, root: ., hosts: ["Example.com"] }\n',
    ).join(),
    /Routes "example\.com\.\/a" and "\/a" match the same requests for host example\.com/,
  );
});

Deno.test("validate: a target host with a leading zero is read as octal: a warning names the address", () => {
  const issues = (target: string) =>
    loadConfigText(`${HEAD}  /:\n    type: proxy\n    target: "${target}"\n`, {
      file: "c.yaml",
      env: { exists: () => true },
    }).issues.map(formatIssue);
  // It connected to 10.0.0.8 without a word (nginx reads 10.0.0.10).
  assert.deepEqual(issues("http://10.0.0.010:8080"), [
    "c.yaml:5:5: warning: routes./.target: Target host 10.0.0.010 is the address 10.0.0.8: a " +
    "number with a leading 0 is octal (0x: hex) in a URL\n" +
    "  fix: Write 10.0.0.8, or the address you meant without leading zeros",
  ]);
  assert.deepEqual(issues("http://10.0.0.10:8080"), []);
  assert.deepEqual(issues("http://backend01.internal:8080"), []);
  assert.match(issues("http://10.0.0.08/").join(), /"08" has a leading 0, which makes it an octal/);
});

Deno.test("parseConfig refuses a tls.server_name no TLS connection can use", () => {
  const at = (name: string) =>
    problems(
      `${HEAD}  /:\n    type: proxy\n    target: "https://10.0.0.1"\n` +
        `    tls: { server_name: ${JSON.stringify(name)} }\n`,
    ).join("\n");
  // Each failed every request with "Invalid hostname" (502).
  for (const bad of ["[::1]", "api.example.com:443", "https://api.example.com", " api", ""]) {
    assert.match(
      at(bad),
      /error: routes\.\/\.tls\.server_name: Invalid server_name .*without scheme/,
    );
  }
  assert.match(at("bücher.example"), /write it as clients send it, "xn--bcher-kva\.example"/);
  for (const good of ["api.example.com", "API.example.com.", "10.0.0.1", "::1", "my_host"]) {
    assert.equal(at(good), "", good);
  }
});

Deno.test("parseConfig: compress takes true or algorithms, min_length and types, each checked", () => {
  const at = (v: string, type = "proxy\n    target: http://10.0.0.1") =>
    problems(`${HEAD}  /:\n    type: ${type}\n    compress: ${v}\n`).join("\n");
  assert.equal(at("true"), "");
  assert.equal(at("{ algorithms: [gzip, br], min_length: 1KiB, types: [text/*] }"), "");
  assert.equal(at("true", "static\n    root: ."), "");
  assert.match(
    at("{ algorithms: [gzip, lzma] }"),
    /c\.yaml:6:36: error: routes\.\/\.compress\.algorithms\.1: Invalid value: expected one of "zstd", "br", "gzip"/,
  );
  assert.match(at("{ algorithms: [gzip, gzip] }"), /List each algorithm once/);
  assert.match(
    at("{ types: [json] }"),
    /c\.yaml:6:25: error: routes\.\/\.compress\.types\.0: Invalid media type "json": write type\/subtype/,
  );
  assert.match(at("{ min_length: lots }"), /compress\.min_length/);
  assert.match(at("{ level: 9 }"), /Unknown key "level"/);
  assert.match(at("true", "redirect\n    target: /x"), /Unknown key "compress"/);
});

Deno.test("validate: a redirect whose relative target the same route serves is a loop warning", () => {
  const issues = (routes: string) =>
    loadConfigText(`${HEAD}${routes}`, { file: "c.yaml", env: { exists: () => true } }).issues
      .map(formatIssue);
  // Each of these redirected the browser until it gave up (ERR_TOO_MANY_REDIRECTS).
  assert.deepEqual(issues('  /old: { type: redirect, target: "/old/new?x=1" }\n'), [
    'c.yaml:3:27: warning: routes./old.target: Redirect target "/old/new?x=1" is served by this ' +
    "route again: every request to it redirects in a loop\n" +
    '  fix: Point it outside "/old", or add a route for "/old/new"',
  ]);
  assert.match(
    issues('  /: { type: redirect, target: "/static", status_code: 302 }\n').join(),
    /Redirect target "\/static" is served by this route again/,
  );
  assert.match(
    issues('  "/": { type: redirect, target: "/home", exact: true, hosts: ["*.a.example"] }\n')
      .join(),
    /fix: Point it outside "\/"/,
  );
  // Not loops: the target has its own route, is another site, or the route is another host's.
  const fine = [
    '  /: { type: redirect, target: "/static" }\n  /static: { type: static, root: . }\n',
    '  /old: { type: redirect, target: "https://example.com/old" }\n',
    '  /old: { type: redirect, target: "//example.com/old" }\n',
    '  "a.example/": { type: redirect, target: "/x" }\n  "/x": { type: static, root: . }\n',
  ];
  for (const routes of fine) assert.deepEqual(issues(routes), [], routes);
});

Deno.test("parseConfig: a rate_limit without `by` is a missing key, with the choices", () => {
  assert.deepEqual(
    parseConfig(
      `${HEAD}  /:\n    type: proxy\n    target: http://10.0.0.1\n    rate_limit: { requests: 5, period: 1s }\n`,
      "c.yaml",
    ).issues.map(formatIssue),
    [
      'c.yaml:6:5: error: routes./.rate_limit.by: Missing required key "by"\n' +
      "  fix: Add by: one of ip, header, route, cookie, query, jwt_claim",
    ],
  );
});

Deno.test("parseConfig: sticky takes true or cookie, max_age, path, same_site, secure, http_only", () => {
  const at = (v: string) =>
    problems(
      `${HEAD}  /:\n    type: load_balance\n    targets: [http://10.0.0.1]\n    sticky: ${v}\n`,
    )
      .join("\n");
  assert.equal(at("true"), "");
  assert.equal(at("{ cookie: srv, max_age: 1h, same_site: strict, secure: true }"), "");
  assert.match(at('{ cookie: "a b" }'), /sticky\.cookie: Use a cookie name/);
  assert.match(at("{ same_site: lox }"), /sticky\.same_site: Invalid value: expected one of "lax"/);
  assert.match(at("{ path: x }"), /sticky\.path/);
  assert.match(
    problems(`${HEAD}  /:\n    type: proxy\n    target: http://10.0.0.1\n    sticky: true\n`)
      .join(),
    /Unknown key "sticky"/,
  );
});

Deno.test("validate: IPv6 literal hosts in route keys and hosts, in the form clients send them", () => {
  const issues = (routes: string) =>
    loadConfigText(`${HEAD}${routes}`, { file: "c.yaml", env: { exists: () => true } }).issues
      .map(formatIssue);
  assert.deepEqual(
    issues(
      '  "[::1]/x": { type: static, root: . }\n  /y: { type: static, root: ., hosts: ["[::1]"] }\n',
    ),
    [],
  );
  assert.deepEqual(issues('  "[0:0::1]/x": { type: static, root: . }\n'), [
    'c.yaml:3:3: error: routes.[0:0::1]/x: Route "[0:0::1]/x" has an IPv6 address clients send as "[::1]"\n' +
    '  fix: Write "[::1]/x"',
  ]);
  assert.match(
    issues('  /y: { type: static, root: ., hosts: ["[::G]"] }\n').join(),
    /Invalid IPv6 host "\[::G\]": write it as in a URL/,
  );
});

Deno.test("parseConfig checks health_check host and headers where they are written", () => {
  const text = 'listen_addr: "127.0.0.1:3000"\n' +
    'health_check: { host: "http://app.test/", headers: { "X Y": "1", Host: a, TE: x } }\n' +
    "routes:\n  /:\n    type: proxy\n    target: http://127.0.0.1:1\n" +
    '    health_check: { host: "[::1]:99999", headers: { X-A: "a\\nb" } }\n';
  assert.deepEqual(problems(text), [
    'c.yaml:2:17: error: health_check.host: Invalid health check host "http://app.test/": a ' +
    "host name or IP address with an optional port, without scheme or path (e.g. " +
    "app.example.com or app.example.com:8080)",
    'c.yaml:2:54: error: health_check.headers.X Y: Invalid header name "X Y": use letters, ' +
    "digits and - (e.g. X-Probe)",
    "c.yaml:2:66: error: health_check.headers.Host: Set the probe's Host with " +
    "health_check.host, not in headers",
    "c.yaml:2:75: error: health_check.headers.TE: TE cannot be set on probes: Prox frames the " +
    "probe request itself",
    'c.yaml:7:21: error: routes./.health_check.host: Invalid health check host "[::1]:99999": ' +
    "a host name or IP address with an optional port, without scheme or path (e.g. " +
    "app.example.com or app.example.com:8080)",
    "c.yaml:7:53: error: routes./.health_check.headers.X-A: Header values cannot contain line " +
    "breaks",
  ]);
  const ok = (host: string) =>
    problems(
      `${HEAD}  /:\n    type: proxy\n    target: http://a\n` +
        `    health_check: { host: "${host}", headers: { User-Agent: probe/1 } }\n`,
    );
  for (const h of ["app.test", "app.test:8080", "10.0.0.1", "[::1]", "[2001:db8::1]:443"]) {
    assert.deepEqual(ok(h), [], h);
  }
});

Deno.test("validate: slow_start takes a duration and warns under strategy first", () => {
  const issues = (extra: string) =>
    loadConfigText(
      `${HEAD}  /:\n    type: load_balance\n    targets: [http://a, http://b]\n${extra}`,
      { file: "c.yaml", env: { exists: () => true } },
    ).issues.map(formatIssue);
  assert.deepEqual(issues("    slow_start: 30s\n"), []);
  assert.deepEqual(issues("    strategy: first\n    slow_start: 30s\n"), [
    "c.yaml:7:5: warning: routes./.slow_start: slow_start has no effect with strategy first: " +
    "the first available target takes all\n" +
    "  fix: Remove slow_start, or use a strategy that shares load (e.g. round_robin)",
  ]);
  assert.match(
    issues("    slow_start: 30\n").join(),
    /c\.yaml:6:5: error: routes\.\/\.slow_start: /,
  );
});

Deno.test("validate: weights warn under the strategies that ignore them (round_robin, the default, and first)", () => {
  // round_robin gives each target a turn whatever its weight: `weight: 3` under the default
  // strategy sent that target a third of the traffic of three, silently.
  const issues = (targets: string, extra = "") =>
    loadConfigText(
      `${HEAD}  /:\n    type: load_balance\n    targets: ${targets}\n${extra}`,
      { file: "c.yaml", env: { exists: () => true } },
    ).issues.map(formatIssue);
  const weighted = "[http://a, { url: http://b, weight: 3 }]";
  assert.deepEqual(issues(weighted), [
    "c.yaml:5:5: warning: routes./.targets: weight has no effect with strategy round_robin: " +
    "each available target takes its turn\n" +
    "  fix: Use strategy weighted_round_robin for shares by weight (or random, " +
    "least_connections, power_of_two, consistent_hash)",
  ]);
  assert.match(
    issues(weighted, "    strategy: first\n").join(),
    /weight has no effect with strategy first/,
  );
  for (const s of ["weighted_round_robin", "random", "least_connections", "consistent_hash"]) {
    assert.deepEqual(issues(weighted, `    strategy: ${s}\n`), [], s);
  }
  // Equal weights (or only a backup's) change nothing: no warning.
  assert.deepEqual(issues("[{ url: http://a, weight: 2 }, { url: http://b, weight: 2 }]"), []);
  assert.deepEqual(issues("[http://a, { url: http://b, backup: true }]"), []);
});

Deno.test("parseConfig points at a bad forward_auth key and says what it takes", () => {
  const route = (fa: string) =>
    problems(`${HEAD}  /:\n    type: static\n    root: .\n    forward_auth: ${fa}\n`);
  assert.deepEqual(route("{ url: http://auth:9000/check, timeout: 2s }"), []);
  assert.deepEqual(route("false"), []);
  assert.match(
    route("{ url: auth:9000 }").join(),
    /^c\.yaml:6:21: error: routes\.\/\.forward_auth\.url: Invalid URL "auth:9000"/,
  );
  assert.match(
    route("{ url: http://a, copy_response_headers: [Content-Length] }").join(),
    /c\.yaml:6:60: error: .*"Content-Length" cannot be copied onto the upstream request/,
  );
  // Expect on the upstream request: told to expect the body, an upstream may answer at once and
  // read the body as its next request, whose answer goes to another client (Prox drops a
  // client's Expect for that reason; header rules cannot set it).
  assert.match(
    route("{ url: http://a, copy_response_headers: [X-User, Expect] }").join(),
    /copy_response_headers\.1: "Expect" cannot be copied onto the upstream request/,
  );
  // Sent as named, they framed or steered the subrequest: Transfer-Encoding: chunked went on a
  // GET without a body (the auth service waits for chunks, or reads the next check as one), and
  // Connection let the client name fields for the auth service's proxy to drop.
  // Content-Length went on a subrequest without the body (every POST's check failed, 503), and
  // Expect on one with it (send_body) lets the auth service answer at once and read the client's
  // body as its next request, whose answer would go to the next check on that connection.
  for (
    const name of [
      "Transfer-Encoding",
      "Connection",
      "TE",
      "Upgrade",
      "Proxy-Connection",
      "Content-Length",
      "Expect",
    ]
  ) {
    assert.match(
      route(`{ url: http://a, copy_request_headers: [Cookie, ${name}] }`).join(),
      new RegExp(`copy_request_headers\\.1: "${name}" cannot be copied onto the auth request`),
      name,
    );
  }
  assert.deepEqual(
    route("{ url: http://a, copy_request_headers: [Cookie, Proxy-Authorization] }"),
    [],
  );
  assert.match(
    route("{ url: http://a, copy_request_headers: [x y] }").join(),
    /forward_auth\.copy_request_headers\.0: Use a header field name/,
  );
  assert.match(route("{ url: http://a, timout: 1s }").join(), /Did you mean "timeout"/);
});

Deno.test("validate warns when forward_auth asks Prox itself on a route that is checked too", () => {
  const warnings = (yaml: string) =>
    loadConfigText(`${HEAD}${yaml}`, { file: "c.yaml", env: { exists: () => true } }).issues
      .map(formatIssue);
  const routes = (authRoute: string) =>
    `  /app: { type: proxy, target: "http://127.0.0.1:8080" }\n` +
    `  /oauth2: { type: proxy, target: "http://127.0.0.1:4180"${authRoute} }\n` +
    `forward_auth: { url: "http://localhost:3000/oauth2/auth" }\n`;
  assert.deepEqual(warnings(routes("")), [
    'c.yaml:5:17: warning: forward_auth.url: forward_auth url "http://localhost:3000/oauth2/auth" ' +
    'is Prox itself, and its route "/oauth2" is checked too: each check would ask again, until ' +
    "the connection limits refuse it (503)\n" +
    '  fix: Set forward_auth: false on route "/oauth2", or point url at the auth service directly',
  ]);
  assert.deepEqual(warnings(routes(", forward_auth: false")), []);
  // Another port is another server.
  assert.deepEqual(warnings(routes("").replace(":3000/", ":4180/")), []);
  // A conditional route takes the check only when its match holds: the route without match (or
  // a shorter prefix) is the one that surely does, wherever the conditional one is written.
  const cond = (checked: boolean) =>
    `  "/oauth2#office": { type: proxy, target: "http://127.0.0.1:4181", match: { client_ip: 10.0.0.0/8 }${
      checked ? "" : ", forward_auth: false"
    } }\n`;
  const [first, ...rest] = routes(", forward_auth: false").split("\n");
  assert.deepEqual(warnings([cond(true) + first, ...rest].join("\n")), []);
  const [a, ...b] = routes("").split("\n");
  assert.match(
    warnings([cond(false) + a, ...b].join("\n")).join(),
    /its route "\/oauth2" is checked/,
  );
});

Deno.test("validate: a forward_auth tls.ca_cert that is not there is an error at its line", () => {
  const { issues } = loadConfigText(
    `${HEAD}  /: { type: static, root: . }\nforward_auth:\n  url: https://auth\n  tls: { ca_cert: ./no-ca.pem }\n`,
    { file: "c.yaml", env: { exists: (p) => p !== "./no-ca.pem" } },
  );
  assert.deepEqual(issues.map(formatIssue), [
    "c.yaml:6:10: error: forward_auth.tls.ca_cert: CA certificate file not found: ./no-ca.pem\n" +
    "  fix: Fix the path (a relative one starts from the working directory of prox)",
  ]);
});

Deno.test("validate: a route's tls.ca_cert that is not there is an error at its line", () => {
  const { issues } = loadConfigText(
    `${HEAD}  /: { type: proxy, target: "https://b", tls: { ca_cert: ./no-ca.pem } }\n`,
    { file: "c.yaml", env: { exists: (p) => p !== "./no-ca.pem" } },
  );
  assert.deepEqual(issues.map(formatIssue), [
    "c.yaml:3:49: error: routes./.tls.ca_cert: CA certificate file not found: ./no-ca.pem\n" +
    "  fix: Fix the path (a relative one starts from the working directory of prox)",
  ]);
});

Deno.test("validate: proxy_protocol is v1 or v2, on proxy and load_balance routes, also with insecure_skip_verify", () => {
  const issues = (routes: string) =>
    loadConfigText(`${HEAD}${routes}`, { file: "c.yaml", env: { exists: () => true } }).issues
      .map((i) => formatIssue({ ...i, excerpt: undefined }));
  assert.deepEqual(
    issues('  /a: { type: proxy, target: "http://b", proxy_protocol: v2 }\n'),
    [],
  );
  assert.deepEqual(
    issues(
      '  /a: { type: proxy, target: "https://b", proxy_protocol: v1, tls: { insecure_skip_verify: true } }\n',
    ),
    [],
  );
  assert.match(
    issues('  /a: { type: load_balance, targets: ["http://b"], proxy_protocol: v3 }\n').join(),
    /routes\.\/a\.proxy_protocol: .*"v1"/,
  );
  assert.match(
    issues('  /a: { type: websocket, target: "ws://b", proxy_protocol: v1 }\n').join(),
    /proxy_protocol/,
  );
});

Deno.test("validate: tls.client_cert needs client_key, and each file the right PEM", () => {
  const files: Record<string, string> = {
    "c.pem": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    "k.pem": "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n",
    "ec.pem": "-----BEGIN EC PRIVATE KEY-----\nMHc\n-----END EC PRIVATE KEY-----\n",
    "enc.pem": "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIF\n-----END ENCRYPTED PRIVATE KEY-----\n",
  };
  const issues = (tls: string, where = "route") =>
    loadConfigText(
      where === "route"
        ? `${HEAD}  /a: { type: proxy, target: "https://b", tls: { ${tls} } }\n`
        : `${HEAD}  /: { type: static, root: . }\nforward_auth:\n  url: https://auth\n  tls: { ${tls} }\n`,
      {
        file: "c.yaml",
        env: {
          exists: (p) => p === "." || p in files,
          readText: (p) => ({ text: files[p] }),
        },
      },
    ).issues.map((i) => formatIssue({ ...i, excerpt: undefined }));
  assert.deepEqual(issues("client_cert: c.pem, client_key: k.pem"), []);
  assert.deepEqual(issues("client_cert: c.pem, client_key: ec.pem"), []);
  assert.deepEqual(issues("client_cert: c.pem, client_key: k.pem", "forward_auth"), []);
  assert.deepEqual(issues("client_cert: c.pem"), [
    "c.yaml:3:50: error: routes./a.tls.client_cert: tls.client_key is missing: a client " +
    "certificate needs its private key and the other way round\n  fix: Add tls.client_key (a PEM file)",
  ]);
  assert.match(issues("client_key: k.pem").join(), /tls\.client_cert is missing/);
  assert.match(
    issues("client_cert: no.pem, client_key: k.pem").join(),
    /routes\.\/a\.tls\.client_cert: Client certificate file not found: no\.pem/,
  );
  assert.deepEqual(issues("client_cert: k.pem, client_key: c.pem"), [
    "c.yaml:3:50: error: routes./a.tls.client_cert: k.pem holds no PEM client certificate " +
    "(-----BEGIN CERTIFICATE-----): it holds a private key\n  fix: Swap tls.client_cert and " +
    "tls.client_key",
    "c.yaml:3:70: error: routes./a.tls.client_key: c.pem holds no PEM client key " +
    "(-----BEGIN PRIVATE KEY-----): it holds a certificate\n  fix: Swap tls.client_cert and " +
    "tls.client_key",
  ]);
  assert.match(
    issues("client_cert: c.pem, client_key: enc.pem", "forward_auth").join(),
    /forward_auth\.tls\.client_key: enc\.pem is encrypted: Prox cannot ask for its passphrase/,
  );
});

Deno.test("passive_health.failures is at most 1,000 (each failure keeps the streak's times)", () => {
  assert.equal(PassiveHealth.safeParse({ failures: 1_000 }).success, true);
  assert.equal(PassiveHealth.safeParse({ failures: 1_001 }).success, false);
});

Deno.test("rate_limit status_code 499 is refused (no client is sent it)", () => {
  const issues = loadConfigText(
    `listen_addr: "127.0.0.1:0"\nroutes:\n  /: { type: static, root: ".", rate_limit: { by: ip, requests: 1, period: 1s, status_code: 499 } }\n`,
    { file: "c.yaml", env: { exists: () => true } },
  ).issues.filter((i) => i.severity === "error").map(formatIssue);
  assert.equal(issues.length, 1);
  assert.match(issues[0], /status_code: 499 is no status a client can be sent/);
});

Deno.test("parseConfig reads a route's bandwidth: sizes per second, after defaulting to 0", () => {
  const bandwidth = (v: string) => {
    const r = parseConfig(`${HEAD}  /dl: { type: proxy, target: http://a, bandwidth: ${v} }\n`);
    const route = r.config?.routes["/dl"];
    return route && "bandwidth" in route ? route.bandwidth : r.issues.map((i) => i.message);
  };
  assert.deepEqual(bandwidth("{ rate: 1MiB/s, after: 10MiB }"), {
    rate: 1024 * 1024,
    after: 10 * 1024 * 1024,
    per: "response",
  });
  assert.deepEqual(bandwidth("{ rate: 500KB, per: client }"), {
    rate: 500_000,
    after: 0,
    per: "client",
  });
  assert.deepEqual(bandwidth("{ rate: 65536, per: route }"), {
    rate: 65536,
    after: 0,
    per: "route",
  });
  assert.deepEqual(bandwidth("{ rate: 0 }"), [
    "A rate of 0 would send nothing: remove bandwidth for no limit",
  ]);
  assert.deepEqual(bandwidth("{ rate: 10mbit }"), [
    'Invalid rate "10mbit": use bytes per second, e.g. 1MiB, 500KiB or 1MiB/s',
  ]);
  assert.deepEqual(bandwidth("{ rate: 1MiB, burst: 1MiB }"), ['Unknown key "burst"']);
  // Static routes take it too; a redirect has no body to pace.
  const ok = parseConfig(`${HEAD}  /f: { type: static, root: ., bandwidth: { rate: 1MiB } }\n`);
  assert.deepEqual(ok.issues, []);
  const no = parseConfig(
    `${HEAD}  /r: { type: redirect, target: /x, bandwidth: { rate: 1MiB } }\n`,
  );
  assert.deepEqual(no.issues.map((i) => i.message), [
    'Unknown key "bandwidth" on a redirect route: it is a key of proxy, load_balance and static routes',
  ]);
});
