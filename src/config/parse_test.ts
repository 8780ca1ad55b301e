import assert from "node:assert/strict";
import { parseConfig } from "./parse.ts";
import { formatIssue, loadConfigText } from "./load.ts";

const HEAD = 'listen_addr: "127.0.0.1:3000"\nroutes:\n';

/** The issues as `prox validate` prints them, without excerpts. */
function problems(text: string): string[] {
  return parseConfig(text, "c.yaml").issues.map((i) => formatIssue({ ...i, excerpt: undefined }));
}

Deno.test("parseConfig follows merge keys and points at the anchored text", () => {
  const shared = "x-common: &common\n  type: proxy\n  timeouts: { connect: 2s }\n";
  const routes = "  /a:\n    <<: *common\n    target: http://127.0.0.1:8080\n" +
    "  /b:\n    <<: [*common]\n    target: http://127.0.0.1:8081\n";
  const ok = parseConfig(`listen_addr: "127.0.0.1:3000"\n${shared}routes:\n${routes}`);
  assert.deepEqual(ok.issues, []);
  assert.equal(ok.config?.routes["/b"].type, "proxy");
  const bad = `listen_addr: "127.0.0.1:3000"\n${
    shared.replace("connect", "conect")
  }routes:\n${routes}`;
  assert.deepEqual(problems(bad), [
    'c.yaml:4:15: error: routes./a.timeouts.conect: Unknown key "conect"\n  fix: Did you mean "connect"?',
    'c.yaml:4:15: error: routes./b.timeouts.conect: Unknown key "conect"\n  fix: Did you mean "connect"?',
  ]);
});

Deno.test("parseConfig names an anchor held by an unknown top-level key", () => {
  const text = `defaults: &d { type: proxy }\n${HEAD}  /:\n    <<: *d\n    target: http://h\n`;
  assert.deepEqual(problems(text), [
    'c.yaml:1:1: error: defaults: Unknown key "defaults"\n  fix: Shared settings for aliases go ' +
    "under a top-level key starting with x- (e.g. x-defaults), which Prox ignores",
  ]);
});

Deno.test("parseConfig locates YAML mistakes where they are, with a fix", () => {
  assert.deepEqual(problems(`${HEAD}  /b:\n    <<: *nope\n    target: http://h\n`), [
    'c.yaml:4:9: error: Unknown anchor "nope" in alias *nope\n  fix: Mark the value to reuse ' +
    "with &nope above this line (an anchor must come before its aliases)",
  ]);
  assert.deepEqual(problems(`${HEAD}  /:\n    <<: 5\n    type: static\n    root: .\n`), [
    "c.yaml:4:9: error: A merge key (<<) takes a mapping, an alias of one (*name) or a list of " +
    "them\n  fix: Point it at an anchored mapping, e.g. <<: *defaults",
  ]);
  assert.deepEqual(problems(`${HEAD}  /:\n    type: static\n    root: .\n---\nx: 1\n`), [
    "c.yaml:6:1: error: YAML syntax error: A second YAML document starts here (---): a config " +
    "is one document\n  fix: Remove this --- line and merge what follows into the document " +
    "above, or move it to its own file",
  ]);
  assert.deepEqual(problems('listen_addr: "127.0.0.1:3000\nroutes:\n  /: {type: static}\n'), [
    "c.yaml:1:14: error: YAML syntax error: This quote is never closed: the value runs on to " +
    "the end of the file\n  fix: Close the quote at the end of the value",
  ]);
  assert.deepEqual(
    problems(`${HEAD}  /: { type: proxy, target: http://a\n  /b: { type: static }\n`),
    [
      "c.yaml:3:6: error: YAML syntax error: This { is never closed\n  fix: Close it with } (a { … } " +
      "value may go on over the next lines only while they are indented more than its key)",
    ],
  );
  assert.deepEqual(problems('listen_addr:"127.0.0.1:3000"\nroutes: {}\n'), [
    "c.yaml:1:1: error: YAML syntax error: A key needs a colon and a space before its value\n" +
    "  fix: Write key: value (a space after the colon)",
  ]);
  assert.deepEqual(problems(`${HEAD}  /:\n    type: proxy\n     target: http://h\n`), [
    "c.yaml:5:6: error: YAML syntax error: Line 5 is indented deeper than the key on line 4, so " +
    "it runs into that key's value\n  fix: Indent line 5 like the key above it",
  ]);
});

Deno.test("parseConfig reports empty keys, routes and files where they are", () => {
  assert.deepEqual(problems(`${HEAD}  /:\n  /b: { type: static, root: . }\n`), [
    'c.yaml:3:3: error: routes./: Route "/" is empty\n  fix: Give it a type and its keys (e.g. ' +
    "type: proxy, target: http://127.0.0.1:8080), or remove it; check the indentation of the " +
    "lines below it",
  ]);
  assert.deepEqual(problems('listen_addr: "127.0.0.1:3000"\nroutes:\n'), [
    'c.yaml:2:1: error: routes: Key "routes" is empty\n  fix: Give it a value (an empty key ' +
    "counts as absent)",
  ]);
  assert.deepEqual(problems("# nothing yet\n"), [
    "c.yaml:1:1: error: The config is empty\n  fix: It needs at least listen_addr and routes, " +
    'e.g. listen_addr: "127.0.0.1:3000"',
  ]);
});

Deno.test("parseConfig says what to write instead of naming schema types", () => {
  assert.deepEqual(problems(`${HEAD}  /:\n    target: http://h\n`), [
    'c.yaml:3:3: error: routes./.type: Missing required key "type"\n  fix: Add type: proxy, ' +
    "load_balance, static, redirect, websocket, respond",
  ]);
  // One mistake, one error: the misspelt required key is not also "missing".
  assert.deepEqual(problems(`${HEAD}  /:\n    type: proxy\n    traget: http://h\n`), [
    'c.yaml:5:5: error: routes./.traget: Unknown key "traget"\n  fix: Did you mean "target"?',
  ]);
  const typed = `workers: "2"\nshutdown_timeout: 30\n${HEAD}  /:\n    type: redirect\n` +
    `    target: /x\n    status_code: "301"\n    hosts: example.com\n`;
  assert.deepEqual(problems(`listen_addr: "127.0.0.1:3000"\n${typed.replace(HEAD, "routes:\n")}`), [
    'c.yaml:2:1: error: workers: Expected a number, got string "2"\n  fix: Remove the quotes: 2',
    'c.yaml:3:1: error: shutdown_timeout: Duration "30" needs a unit: use e.g. "30s" or "30ms"',
    "c.yaml:8:5: error: routes./.status_code: Invalid value: expected one of 301, 302, 303, 307, " +
    "308\n  fix: Remove the quotes: 301",
    'c.yaml:9:5: error: routes./.hosts: Expected a list, got string "example.com"\n  fix: Write ' +
    "a list: [example.com]",
  ]);
});

Deno.test("parseConfig refuses tags it cannot expand and explains an unquoted * host", () => {
  // `token: !env ADMIN_TOKEN` loaded as the literal token "ADMIN_TOKEN".
  const admin = 'admin: { listen_addr: "127.0.0.1:9090", token: !env ADMIN_TOKEN }\n';
  assert.deepEqual(problems(`${admin}${HEAD}  /: { type: static, root: . }\n`), [
    "c.yaml:1:48: error: Unknown YAML tag !env: Prox expands no tags, so the value would load " +
    "as written\n  fix: Remove the tag and write the value itself (to fill in values from the " +
    "environment, generate the file, e.g. prox serve -c <(envsubst < config.tpl.yaml))",
  ]);
  assert.deepEqual(problems(`${HEAD}  *.example.com/:\n    type: static\n    root: .\n`), [
    "c.yaml:3:3: error: An unquoted * starts a YAML alias: *.example.com/ refers to no anchor\n" +
    '  fix: Quote it: "*.example.com/":',
  ]);
  assert.deepEqual(problems(`workers: .nan\n${HEAD}  /: { type: static, root: . }\n`), [
    "c.yaml:1:1: error: workers: Expected a number, got .nan",
  ]);
  assert.deepEqual(
    problems(`${HEAD}  /:\n    type: proxy\n    target: http://h\n    retries: .inf\n`),
    [
      "c.yaml:6:5: error: routes./.retries: Expected a mapping, got .inf",
    ],
  );
});

Deno.test("parseConfig suggests the one value a longer or shorter spelling stands for", () => {
  const text = `log: { level: warning }\n${HEAD}  /:\n    type: load_balance\n` +
    "    targets: [http://a]\n    strategy: least_conn\n";
  assert.deepEqual(problems(text), [
    'c.yaml:1:8: error: log.level: Invalid value: expected one of "debug", "info", "warn", ' +
    '"error"\n  fix: Did you mean "warn"?',
    'c.yaml:7:5: error: routes./.strategy: Invalid value: expected one of "round_robin", ' +
    '"random", "weighted_round_robin", "least_connections", "power_of_two", "consistent_hash", ' +
    '"first"\n  fix: Did you mean "least_connections"?',
  ]);
});

Deno.test("parseConfig drops the white space around a target URL (a | block keeps a newline)", () => {
  const text = `${HEAD}  /a:\n    type: proxy\n    target: |\n      http://h:1/x\n` +
    `  /b: { type: load_balance, targets: ["http://h:2 ", { url: " http://h:3" }] }\n` +
    `  /c: { type: websocket, target: "ws://h:4\\t" }\n`;
  const r = parseConfig(text);
  assert.deepEqual(r.issues, []);
  const routes = r.config!.routes as Record<string, { target?: string; targets?: unknown[] }>;
  // "http://h:1/x\n" was kept and named the backend in metric labels and logs.
  assert.equal(routes["/a"].target, "http://h:1/x");
  assert.deepEqual(routes["/b"].targets, ["http://h:2", {
    url: "http://h:3",
    weight: 1,
    backup: false,
  }]);
  assert.equal(routes["/c"].target, "ws://h:4");
});

Deno.test("parseConfig shows a window of a long line around the mistake, without CR", () => {
  const routes = Array.from({ length: 200 }, (_, i) => `"/r${i}": {"type": "static", "root": "."}`);
  const json = `{"listen_addr": "127.0.0.1:3000", "routes": {${routes.join(", ")}, "/x": "a": 1}}`;
  const [issue] = parseConfig(json, "c.json").issues;
  // The whole 8 KB line was printed.
  const [shown, caret] = issue.excerpt!.split("\n");
  assert.ok(shown.length < 120, shown);
  assert.equal(shown[caret.indexOf("^")], json[issue.col - 1]);
  const crlf = parseConfig('listen_addr: "127.0.0.1:3000"\r\nroutes:\r\n\t/: {}\r\n').issues[0];
  assert.equal(crlf.excerpt, "   3 |  /: {}\n     | ^");
});

Deno.test("loadConfigText says when a value a rule complains about is a default", () => {
  const text = `listen_addr: "127.0.0.1:9090"\nadmin: {}\nhealth_check: { enabled: true, ` +
    `interval_secs: 1 }\nroutes:\n  /: { type: proxy, target: http://h }\n`;
  const r = loadConfigText(text, { file: "c.yaml", env: { exists: () => true } });
  // "timeout_secs (2)" and "admin.listen_addr (127.0.0.1:9090)" were never written.
  assert.deepEqual(r.issues.map((i) => [i.line, i.col, i.path, i.hint]), [
    [
      2,
      1,
      "admin.listen_addr",
      "Give each listener its own port (listen_addr is not in the " +
      "file: its default applies)",
    ],
    [
      3,
      1,
      "health_check.timeout_secs",
      "Use a timeout shorter than the interval so probes do " +
      "not overlap (timeout_secs is not in the file: its default applies)",
    ],
  ]);
});

Deno.test("loadConfigText warns when metrics on the main listener hide a route's path", () => {
  const text = `listen_addr: "127.0.0.1:3000"\nmetrics: { on_main_listener: true }\n` +
    `routes:\n  /metrics: { type: proxy, target: http://app:9100 }\n`;
  const r = loadConfigText(text, { file: "c.yaml", env: { exists: () => true } });
  assert.deepEqual(r.issues.map(formatIssue), [
    "c.yaml:2:1: warning: metrics.path: GET /metrics on the main listener is answered with " +
    'Prox\'s metrics, never by route "/metrics"\n  fix: Choose another metrics.path (e.g. ' +
    "/prox/metrics), or serve metrics on the admin listener (path is not in the file: its " +
    "default applies)",
  ]);
});

Deno.test("parseConfig says to quote a value YAML reads as something else", () => {
  assert.deepEqual(problems("listen_addr: [::]:3000\nroutes: {}\n"), [
    "c.yaml:1:14: error: YAML syntax error: A plain value cannot start with [: YAML reads [::] " +
    "as a list, then cannot read what follows\n  fix: If [::]:3000 is meant as text, quote it: " +
    '"[::]:3000"',
  ]);
  assert.deepEqual(problems(`${HEAD}  /: { type: static, root: @app }\n`), [
    "c.yaml:3:28: error: YAML syntax error: Plain value cannot start with reserved character @\n" +
    '  fix: If @app is meant as text, quote it: "@app"',
  ]);
});

Deno.test("loadConfigText warns about a redirect target browsers read as a relative path", () => {
  const text = `${HEAD}  /old: { type: redirect, target: www.example.com }\n` +
    `  /a: { type: redirect, target: new }\n  /b: { type: redirect, target: /new }\n` +
    `  /c: { type: redirect, target: "https://x" }\n`;
  const r = loadConfigText(text, { file: "c.yaml", env: { exists: () => true } });
  // /old/x went to /old/www.example.com/x, silently.
  assert.deepEqual(r.issues.map((i) => `${i.severity} ${i.path}: ${i.hint}`), [
    "warning routes./old.target: Write https://www.example.com for another site, or " +
    "/www.example.com for a path here",
    "warning routes./a.target: Start it with / for a path on this site (/new) or with https:// " +
    "for another",
  ]);
});

Deno.test("parseConfig says how to take a target out of rotation instead of weight 0", () => {
  const text = `${HEAD}  /:\n    type: load_balance\n    targets:\n      - http://a\n` +
    `      - { url: "http://b", weight: 0 }\n`;
  assert.deepEqual(problems(text), [
    "c.yaml:7:28: error: routes./.targets.1.weight: Must be at least 1, got 0\n" +
    "  fix: To take a target out of rotation, remove it (a reload lets its requests in flight " +
    "finish) or mark it backup: true to keep it as a standby",
  ]);
});

Deno.test("parseConfig names the types a list item may have, and an empty item", () => {
  const text = `${HEAD}  /:\n    type: load_balance\n    targets:\n      - http://a\n      -\n`;
  // It said only "Invalid value".
  assert.deepEqual(problems(text), [
    "c.yaml:7:8: error: routes./.targets.1: Expected a string or a mapping, got null\n" +
    "  fix: An empty list item: remove its - line or give it a value",
  ]);
});

Deno.test("parseConfig refuses an alias inside the value it names (it overflowed the stack)", () => {
  assert.deepEqual(problems(`x-a: &a [*a]\n${HEAD}  /: { type: static, root: . }\n`), [
    "c.yaml:1:10: error: The alias *a sits inside the value anchored &a, so that value would " +
    "contain itself without end\n  fix: Point the alias at a value defined outside this one",
  ]);
  const merge = `${HEAD}  /: &r { type: proxy, target: http://a, <<: *r }\n`;
  assert.equal(problems(merge).length, 1);
});

Deno.test("parseConfig points at a misspelt route type key, not at a missing type", () => {
  assert.deepEqual(problems(`${HEAD}  /:\n    tpye: proxy\n    target: http://a\n`), [
    'c.yaml:4:5: error: routes./.tpye: Unknown key "tpye"\n  fix: Did you mean "type"?',
  ]);
});

Deno.test("parseConfig says a route's key written at the wrong indentation belongs to a route", () => {
  const fix = "  fix: This is a key of a route: indent it under its route, below routes";
  assert.deepEqual(problems(`${HEAD}  /api:\n  type: proxy\n`), [
    'c.yaml:3:3: error: routes./api: Route "/api" is empty\n  fix: Give it a type and its keys ' +
    "(e.g. type: proxy, target: http://127.0.0.1:8080), or remove it; check the indentation of " +
    "the lines below it",
    `c.yaml:4:3: error: routes.type: Expected a mapping, got string "proxy"\n${fix}`,
  ]);
  assert.deepEqual(problems(`${HEAD}  /api: { type: static, root: . }\ntarget: http://a\n`), [
    `c.yaml:4:1: error: target: Unknown key "target"\n${fix}`,
  ]);
});

Deno.test("parseConfig warns that ${VAR} is not expanded in the config", () => {
  const text = `${HEAD}  /:\n    type: redirect\n    target: "https://\${HOST:-x}/"\n` +
    `  /b: { type: proxy, target: http://a, request_headers: { add: { X-A: "\${A}" } } }\n`;
  // The redirect went to https://${HOST:-x}/ without a word.
  assert.deepEqual(problems(text), [
    "c.yaml:5:5: warning: routes./.target: ${HOST} is not expanded: Prox reads the config as " +
    "written\n  fix: Put the value in the file, or generate it (prox serve -c <(envsubst < " +
    "config.tpl.yaml)); header values and bodies take {env.NAME}",
  ]);
});

Deno.test("parseConfig says typographic quotes are no quotes", () => {
  assert.deepEqual(problems(`${HEAD}  /: { type: proxy, target: “http://a” }\n`), [
    'c.yaml:3:21: error: routes./.target: Invalid URL "“http://a”": use an absolute URL starting ' +
    "with http:// or https://, e.g. http://127.0.0.1:8080\n  fix: Replace the typographic quotes " +
    "(“ ” ‘ ’) with straight ones (\" or ')",
  ]);
});

Deno.test("loadConfigText does not call a route key it cannot find a default", () => {
  const r = loadConfigText(`${HEAD}  ~: { type: static, root: . }\n`, {
    file: "c.yaml",
    env: { exists: () => true },
  });
  assert.deepEqual(r.issues.map((i) => i.hint), ['Write "/" for a path, "/" for a host']);
});

Deno.test("parseConfig says which route types have a key another type was given", () => {
  const text = `${HEAD}  /s:\n    type: static\n    root: .\n    cache: true\n` +
    `  /w:\n    type: websocket\n    target: ws://h\n    compress: true\n`;
  assert.deepEqual(problems(text), [
    'c.yaml:6:5: error: routes./s.cache: Unknown key "cache" on a static route: it is a key of ' +
    'proxy and load_balance routes\n  fix: Did you mean "cache_control"? Else remove it',
    'c.yaml:10:5: error: routes./w.compress: Unknown key "compress" on a websocket route: it is a ' +
    "key of proxy, load_balance, static and respond routes\n  fix: Remove it",
  ]);
});

Deno.test("parseConfig refuses a duration or size too large to count (it became Infinity or 1e+21)", () => {
  const nines = "9".repeat(400);
  const text = `${HEAD}  /: { type: proxy, target: http://a }\n` +
    `tls:\n  cert_path: c.pem\n  key_path: k.pem\n  hsts: { max_age: 1000000000000000000000s }\n` +
    `shutdown_timeout: ${nines}s\nlimits: { max_request_body: ${nines}GiB }\n`;
  // HSTS went out as max-age=1e+21 (not a delta-seconds: browsers drop the field); the others
  // were Infinity (null in /config).
  assert.deepEqual(problems(text), [
    `c.yaml:7:11: error: tls.hsts.max_age: Duration "1000000000000000000000s" is too long: ` +
    "use at most 104249991d (2^53 ms)",
    `c.yaml:8:1: error: shutdown_timeout: Duration "${nines}s" is too long: ` +
    "use at most 104249991d (2^53 ms)",
    `c.yaml:9:11: error: limits.max_request_body: Size "${nines}GiB" is too large: ` +
    "use at most 8388608GiB (2^53 bytes)",
  ]);
  const ok = parseConfig(
    `${HEAD}  /: { type: proxy, target: http://a }\nshutdown_timeout: 104249991d\n` +
      "limits: { max_request_body: 8388608GiB }\n",
  );
  assert.equal(ok.config?.shutdown_timeout, 104249991 * 86_400_000);
  assert.equal(ok.config?.limits.max_request_body, 2 ** 53);
});

Deno.test("parseConfig does not call an inherited name (constructor) a key of every route type", () => {
  assert.deepEqual(problems(`${HEAD}  /: { type: proxy, target: http://a, constructor: 1 }\n`), [
    'c.yaml:3:39: error: routes./.constructor: Unknown key "constructor"\n  fix: Allowed keys ' +
    "here: type, target, path_rewrite, path_regex, rate_limit, rate_limits, concurrency_limit, bandwidth, request_headers, response_headers, " +
    "request_body, response_body, hosts, preserve_host, rewrite_location, early_hints, browser_headers, forwarded, timeouts, " +
    "max_request_body, tls, retries, health_check, passive_health, try_when_down, compress, mirror, " +
    "cache, error_pages, intercept_upstream, proxy_protocol, upstream_protocol, grpc_web, match, ip_access, basic_auth, jwt_auth, client_cert, access_log, cors, " +
    "forward_auth",
  ]);
});

Deno.test("parseConfig reports a misspelt key left empty, and says a value-less entry is ignored", () => {
  // An empty value counts as absent: `helth_check:` with its lines commented out loaded silently.
  const text = `${HEAD}  /:\n    type: proxy\n    target: http://a\n    timout:\n` +
    "    request_headers:\n      set:\n        X-Debug:\n        X-B: b\nhelth_check:\n" +
    "#  enabled: false\nx-shared:\n";
  assert.deepEqual(problems(text), [
    'c.yaml:6:5: error: routes./.timout: Unknown key "timout"\n  fix: Did you mean "timeouts"?',
    "c.yaml:9:9: warning: routes./.request_headers.set.X-Debug: X-Debug has no value, so the " +
    'entry is ignored\n  fix: Give it a value (X-Debug: "" for an empty one) or remove it',
    'c.yaml:11:1: error: helth_check: Unknown key "helth_check"\n  fix: Did you mean ' +
    '"health_check"?',
  ]);
  // Known keys left empty are absent, as before.
  assert.deepEqual(problems(`${HEAD}  /: { type: proxy, target: http://a }\nhealth_check:\n`), []);
});

Deno.test("parseConfig warns that {env.NAME} is expanded in rule values and pages only", () => {
  const text = `${HEAD}  /:\n    type: proxy\n    target: "http://{env.BACKEND}:8080"\n` +
    `    request_headers: { set: { X-A: "{env.HOME}" } }\n`;
  // The target went to a host named "{env.backend}" (502 for every request), without a word.
  assert.deepEqual(problems(text), [
    "c.yaml:5:5: warning: routes./.target: {env.BACKEND} is not expanded here: only header " +
    "rule values, bodies and error pages take {env.NAME}\n  fix: Put the value in the file, or " +
    "generate it (prox serve -c <(envsubst < config.tpl.yaml))",
  ]);
});

Deno.test('parseConfig refuses keys that differ only in their YAML type (404 and "404")', () => {
  // Both became "404": the second page replaced the first without a word.
  const text = `${HEAD}  /: { type: proxy, target: http://a }\nerror_pages:\n  404: a.html\n` +
    `  "404": b.html\n`;
  assert.deepEqual(problems(text), [
    'c.yaml:6:3: error: YAML syntax error: Duplicate key "404"\n  fix: Each key may appear ' +
    "once in a mapping (of two equal route keys the Rust Prox silently used the last); merge or " +
    "rename the duplicate",
  ]);
});

Deno.test("parseConfig keeps a positive duration under 1 ms positive (0 turns a timeout off)", () => {
  const ok = parseConfig(
    `${HEAD}  /: { type: proxy, target: http://a, timeouts: { connect: 0.4ms } }\n`,
  );
  const route = ok.config?.routes["/"];
  assert.equal(route && "timeouts" in route ? route.timeouts?.connect : undefined, 1);
});

Deno.test("parseConfig puts the caret under the mistake on lines numbered 10000 and beyond", () => {
  const routes = Array.from({ length: 5000 }, (_, i) => `  /r${i}:\n    type: static\n    root: .`);
  const text = `${HEAD}${routes.join("\n")}\n  /x: { type: static, root: ". }\n`;
  const [issue] = parseConfig(text, "c.yaml").issues;
  assert.equal(issue.line, 15003);
  const [shown, caret] = issue.excerpt!.split("\n");
  // The gutter of "15003 | " is one wider than "    | ": the caret sat one column to the left.
  assert.equal(shown.indexOf("|"), caret.indexOf("|"));
  assert.equal(shown[caret.indexOf("^")], '"');
});

Deno.test("parseConfig offers an empty value only where one is allowed (header rules)", () => {
  assert.deepEqual(
    problems(`${HEAD}  /: { type: proxy, target: http://a }\nerror_pages:\n  404:\n`),
    [
      "c.yaml:5:3: warning: error_pages.404: 404 has no value, so the entry is ignored\n  fix: " +
      "Give it a value or remove it",
    ],
  );
});

Deno.test("parseConfig says a value nested too deeply is that, without echoing it as a fix", () => {
  const text = `${HEAD}  /: { type: proxy, target: http://a }\nx-a: ${"[".repeat(3000)}${
    "]".repeat(3000)
  }\n`;
  const issues = problems(text);
  // It said "Maximum call stack size exceeded" and "fix: If [[[[…(3000 of them) is meant as text".
  assert.equal(issues.length, 1);
  assert.match(issues[0], /^c\.yaml:4:\d+: error: YAML syntax error: The value nests too deeply/);
  assert.ok(issues[0].length < 300, issues[0]);
});

Deno.test("parseConfig refuses http2_max_concurrent_streams past a SETTINGS value (2^32 - 1)", () => {
  // 4294967296 went out as 0 in the 32-bit SETTINGS field: no client stream was allowed.
  const text = `${HEAD}  /: { type: proxy, target: http://a }\n` +
    "protocols: { http2_max_concurrent_streams: 4294967296 }\n";
  assert.deepEqual(problems(text), [
    "c.yaml:4:14: error: protocols.http2_max_concurrent_streams: Must be at most 4294967295, " +
    "got 4294967296",
  ]);
});

Deno.test("parseConfig: a syntax error's excerpt masks a secret on its line, the caret in place", () => {
  const cases = [
    'listen_addr: "127.0.0.1:0"\nadmin:\n  token: "S3CRETTOK\n  listen_addr: x\nroutes: {}\n',
    'listen_addr: "127.0.0.1:0"\nadmin: { token: S3CRETTOK, listen_addr: [x }\nroutes: {}\n',
    'listen_addr: "127.0.0.1:0"\nadmin:\n  token: [S3CRETTOK\nroutes: {}\n',
    '{"listen_addr":"127.0.0.1:0","admin":{"token":"S3CRETTOK","listen_addr":[}}\n',
    'listen_addr: "127.0.0.1:0"\nrate_limit_store: { url: "redis://:S3CRETPW@r:6379", x: [ }\n',
    'listen_addr: "127.0.0.1:0"\nroutes:\n  "/":\n    basic_auth: { users: { a: "$2y$05$S3CRETHASH" }\n',
  ];
  for (const text of cases) {
    const issues = parseConfig(text, "c.yaml").issues;
    assert.ok(issues.length > 0 && issues[0].excerpt, text);
    const excerpt = issues[0].excerpt!;
    assert.ok(!excerpt.includes("S3CRET"), excerpt);
    // Masked character for character: the caret still points at the column the message names.
    const [src, caret] = excerpt.split("\n");
    const line = text.split("\n")[issues[0].line - 1];
    assert.equal(src.length - src.indexOf("| ") - 2, line.length, excerpt);
    assert.equal(caret.indexOf("^") - caret.indexOf("| ") - 2, issues[0].col - 1, excerpt);
  }
  // Other values on the line stay as written.
  const other = parseConfig('listen_addr: "127.0.0.1:0"\nadmin: { listen_addr: [x }\n', "c.yaml");
  assert.match(other.issues[0].excerpt!, /listen_addr: \[x \}/);
});

Deno.test("parseConfig gives a fix for a listen address written as a bare port", () => {
  const route = "routes:\n  /: { type: static, root: . }\n";
  assert.deepEqual(problems(`listen_addr: 3000\nadmin: { listen_addr: 9090 }\n${route}`), [
    "c.yaml:1:1: error: listen_addr: Expected a string, got number 3000\n  fix: Name the " +
    'address too, in quotes: "0.0.0.0:3000" (every IPv4 address), "[::]:3000" (every address) ' +
    'or "127.0.0.1:3000" (this machine only)',
    "c.yaml:2:10: error: admin.listen_addr: Expected a string, got number 9090\n  fix: Name the " +
    'address too, in quotes: "0.0.0.0:9090" (every IPv4 address), "[::]:9090" (every address) ' +
    'or "127.0.0.1:9090" (this machine only)',
  ]);
});

Deno.test("parseConfig says to write seconds alone where a key counts seconds (timeout_secs: 2s)", () => {
  const hc = "health_check: { interval_secs: 1m, timeout_secs: 2s, healthy_threshold: 2s }\n";
  assert.deepEqual(problems(`${hc}${HEAD}  /: { type: static, root: . }\n`), [
    'c.yaml:1:17: error: health_check.interval_secs: Expected a number, got string "1m"\n' +
    "  fix: Write the number of seconds alone: 60",
    'c.yaml:1:36: error: health_check.timeout_secs: Expected a number, got string "2s"\n' +
    "  fix: Write the number of seconds alone: 2",
    'c.yaml:1:54: error: health_check.healthy_threshold: Expected a number, got string "2s"',
  ]);
  assert.deepEqual(
    problems(`health_check: { timeout_secs: 500ms }\n${HEAD}  /: { type: static, root: . }\n`),
    [
      'c.yaml:1:17: error: health_check.timeout_secs: Expected a number, got string "500ms"\n' +
      "  fix: Write a whole number of seconds, e.g. 1",
    ],
  );
});

Deno.test("parseConfig says how to write a list given where a mapping belongs", () => {
  assert.deepEqual(problems('- listen_addr: "127.0.0.1:3000"\n  routes: {}\n'), [
    "c.yaml:1:1: error: The config must be a mapping of keys such as listen_addr and routes\n" +
    '  fix: Remove the "- " before listen_addr: the top-level keys are written at the start of ' +
    "their lines, without a list dash",
  ]);
  assert.deepEqual(problems("hello\n"), [
    "c.yaml:1:1: error: The config must be a mapping of keys such as listen_addr and routes\n" +
    "  fix: Check that --config names the config file; it starts with keys, e.g. " +
    'listen_addr: "127.0.0.1:3000"',
  ]);
  const list = 'listen_addr: "127.0.0.1:3000"\nroutes:\n  - path: /api\n    type: proxy\n' +
    "    target: http://127.0.0.1:8080\n";
  assert.deepEqual(problems(list), [
    "c.yaml:2:1: error: routes: Expected a mapping, got a list\n  fix: Key each route by its " +
    'path instead of a list item: "/api": { type: proxy, target: … } (README "Routes")',
  ]);
});

Deno.test("parseConfig says what to add for a missing listen_addr, routes, target or root", () => {
  assert.deepEqual(problems("routes:\n  /a: { type: redirect }\n  /b: { type: proxy }\n"), [
    'c.yaml:1:1: error: listen_addr: Missing required key "listen_addr"\n  fix: Add ' +
    'listen_addr: "127.0.0.1:3000" (IP:PORT; "0.0.0.0:3000" listens on every IPv4 address)',
    'c.yaml:2:3: error: routes./a.target: Missing required key "target"\n  fix: Add target: ' +
    "where to send the client, e.g. https://example.com/new or /new",
    'c.yaml:3:3: error: routes./b.target: Missing required key "target"\n  fix: Add target: ' +
    "the upstream's URL, e.g. http://127.0.0.1:8080",
  ]);
  const more = 'listen_addr: "127.0.0.1:3000"\nroutes:\n  /c: { type: static }\n' +
    "  /d: { type: websocket }\n";
  assert.deepEqual(problems(more), [
    'c.yaml:3:3: error: routes./c.root: Missing required key "root"\n  fix: Add root: the ' +
    "directory to serve, e.g. ./public",
    'c.yaml:4:3: error: routes./d.target: Missing required key "target"\n  fix: Add target: ' +
    "the upstream's URL, e.g. ws://127.0.0.1:8080",
  ]);
  assert.deepEqual(problems('listen_addr: "127.0.0.1:3000"\n'), [
    'c.yaml:1:1: error: routes: Missing required key "routes"\n  fix: Add routes: with one ' +
    'route per path, e.g. "/": { type: proxy, target: "http://127.0.0.1:8080" }',
  ]);
});

Deno.test("parseConfig explains a ': ' inside a plain value, a key without a colon and a line between two indents", () => {
  const route = `${HEAD}  /api:\n    type: respond\n`;
  assert.deepEqual(problems(`${route}    body: Error: not found # the page\n`), [
    'c.yaml:5:11: error: YAML syntax error: The value holds ": ", which YAML reads as the start ' +
    'of another key\n  fix: Quote the value: body: "Error: not found"',
  ]);
  assert.deepEqual(problems(`${route}    status\n`), [
    'c.yaml:5:5: error: YAML syntax error: "status" has no colon after it\n  fix: Write ' +
    "status: and its value, or remove the line",
  ]);
  // Between the route's keys (4 spaces) and the routes (2): which one was meant is for the user.
  assert.deepEqual(problems(`${route}   status: 404\n`), [
    "c.yaml:5:4: error: YAML syntax error: Line 5 is indented 3 spaces, which lines up with no " +
    "key above it\n  fix: Indent it 4 spaces like line 4 (a key of that mapping), or 2 like " +
    "line 3",
  ]);
});

Deno.test("parseConfig suggests a key's plural for its singular (retry: retries)", () => {
  const text = `${HEAD}  /:\n    type: proxy\n    target: http://a\n    retry: { attempts: 3 }\n`;
  assert.deepEqual(problems(text), [
    'c.yaml:6:5: error: routes./.retry: Unknown key "retry"\n  fix: Did you mean "retries"?',
  ]);
});

Deno.test("parseConfig says yes/no is no boolean where a mapping is allowed too, and to drop list dashes", () => {
  const text = `compress: yes\n${HEAD}  /:\n    type: proxy\n    target: http://a\n` +
    "    request_headers:\n      - X-A: a\n      - X-B: b\n";
  assert.deepEqual(problems(text), [
    'c.yaml:1:1: error: compress: Expected true or false or a mapping, got string "yes"\n' +
    "  fix: Write true or false (YAML 1.2 reads yes/no/on/off as strings)",
    "c.yaml:7:5: error: routes./.request_headers: Expected a mapping, got a list\n  fix: " +
    'Remove the "- " before each entry: a mapping is written X-A: a, one per line',
  ]);
});

Deno.test("parseConfig: a route key at the top level, headers for two keys, a number's typo unquoted", () => {
  const text = "rate_limit: { by: ip, requests: 10, period: 1s }\n" +
    `${HEAD}  /:\n    type: proxy\n    target: http://a\n    headers: { Host: a }\n` +
    "  /old:\n    type: redirect\n    target: https://example.com/new\n    status_code: 301s\n";
  assert.deepEqual(problems(text), [
    // It said 'Did you mean "rate_limit_store"?', a Redis connection.
    'c.yaml:1:1: error: rate_limit: Unknown key "rate_limit"\n  fix: rate_limit is a key of ' +
    "a route, not of the top level: put it under each route that needs it",
    'c.yaml:7:5: error: routes./.headers: Unknown key "headers"\n  fix: Did you mean ' +
    '"request_headers" or "response_headers" or "browser_headers"?',
    // It said 'Did you mean "301"?', which is refused as a string.
    "c.yaml:11:5: error: routes./old.status_code: Invalid value: expected one of 301, 302, 303, " +
    "307, 308\n  fix: Did you mean 301?",
  ]);
});

Deno.test("parseConfig points at an unquoted [::]:443 from its start, and says YAML reads a list", () => {
  assert.deepEqual(problems("listen_addr: [::]:443\nroutes:\n  /: { type: static, root: . }\n"), [
    "c.yaml:1:14: error: YAML syntax error: A plain value cannot start with [: YAML reads [::] " +
    'as a list, then cannot read what follows\n  fix: If [::]:443 is meant as text, quote it: "[::]:443"',
  ]);
});

Deno.test("parseConfig gives a fix for a count in words, a mapping for a list, a route type as a key", () => {
  const route = '  /a: { type: proxy, target: "http://127.0.0.1:8080"';
  assert.deepEqual(problems(`workers: two\n${HEAD}${route} }\n`), [
    'c.yaml:1:1: error: workers: Expected a number, got string "two"\n  fix: Write it in digits: 2',
  ]);
  assert.deepEqual(problems(`${HEAD}${route}, hosts: { a.example, b.example } }\n`), [
    "c.yaml:3:55: error: routes./a.hosts: Expected a list, got a mapping\n" +
    "  fix: Write a list, in square brackets: [a.example, b.example]",
  ]);
  assert.deepEqual(problems(`${HEAD}${route}, hosts: { a: b } }\n`), [
    "c.yaml:3:55: error: routes./a.hosts: Expected a list, got a mapping\n" +
    '  fix: Write a list: hosts: [first, second], or one item per line starting with "- "',
  ]);
  assert.deepEqual(problems(`${HEAD}${route}, load_balance: { targets: [] } }\n`), [
    'c.yaml:3:55: error: routes./a.load_balance: Unknown key "load_balance"\n' +
    "  fix: A route's kind goes in type: write type: load_balance, with its keys beside type " +
    "(not under load_balance:)",
  ]);
});

Deno.test("parseConfig reads a plain number or boolean where text is expected as its text", () => {
  // serde_yaml (the Rust Prox) read any plain scalar into a string field: these configs loaded.
  const text = `${HEAD}  /:\n    type: proxy\n    target: http://127.0.0.1:1\n` +
    "    rate_limit: { by: ip, requests: 1, period: 1m, message: 429 }\n" +
    "    response_body:\n      condition: { has_header: { name: X-Debug, value_matches: true } }\n" +
    "      set_json: { zip: 01234, n: 10, big: 12345678901234567890 }\n" +
    "  /b:\n    type: proxy\n    target: http://127.0.0.1:2\n" +
    "    request_body: { condition: { path_matches: 2024 }, set_text: x }\n";
  const r = parseConfig(text, "c.yaml");
  assert.deepEqual(r.issues, []);
  const route = JSON.parse(JSON.stringify(r.config!.routes["/"]));
  assert.equal(route.rate_limit.message, "429");
  assert.equal(route.response_body.condition.has_header.value_matches, "true");
  assert.equal(
    JSON.stringify(
      (r.config!.routes["/"] as { response_body: { set_json: unknown } })
        .response_body.set_json,
    ),
    '{"zip":"01234","n":10,"big":12345678901234567890}',
  );
  const b = JSON.parse(JSON.stringify(r.config!.routes["/b"]));
  assert.equal(b.request_body.condition.path_matches, "2024");
  // listen_addr: 3000 keeps its own fix (a port alone is no address).
  assert.match(
    problems(`listen_addr: 3000\nroutes:\n  /: { type: redirect, target: /x }\n`)[0],
    /Name the address too/,
  );
});

Deno.test("parseConfig reads a mapping of many keys in linear time, duplicates still found", () => {
  // The YAML library's own duplicate check compares each key with every earlier one: 40,000
  // keys (470 KB, well under the 4 MiB a config may have) took 14 s, the event loop held.
  const keys = Array.from({ length: 40_000 }, (_, i) => `  k${i}: 1\n`).join("");
  const text = `${HEAD}  /: { type: redirect, target: https://example.com }\nx-many:\n${keys}`;
  const started = performance.now();
  const r = parseConfig(text, "c.yaml");
  const took = performance.now() - started;
  assert.deepEqual(r.issues, []);
  assert.ok(took < 5_000, `took ${Math.round(took)} ms`);
  assert.deepEqual(problems(`${text}  k17: 2\n`), [
    'c.yaml:40005:3: error: YAML syntax error: Duplicate key "k17"\n  fix: Each key may appear ' +
    "once in a mapping (of two equal route keys the Rust Prox silently used the last); merge or " +
    "rename the duplicate",
  ]);
});

Deno.test("parseConfig reads a file whose lines end in CR alone as YAML (and libyaml) do", () => {
  // Classic Mac line ends: YAML 1.2 §5.4 counts a lone CR as a line break; the seed loaded it.
  const text =
    `${HEAD}  /a:\n    type: redirect\n    target: https://example.com\n    status_code: 301\n`;
  const r = parseConfig(text.replaceAll("\n", "\r"), "c.yaml");
  assert.deepEqual(r.issues, []);
  assert.deepEqual(r.config, parseConfig(text, "c.yaml").config);
  // Located by line as with LF.
  const bad = text.replace("301", "305").replaceAll("\n", "\r");
  assert.match(problems(bad)[0], /^c\.yaml:6:5: error: routes\.\/a\.status_code/);
});

Deno.test("parseConfig refuses aliases that repeat a large value many times (bounded memory)", () => {
  // 40 KB of text: 300 aliases of one list of 20,000 items are 6 million values once expanded
  // (2,000 aliases of 100,000 items ran Prox out of memory); the alias count let them through.
  const list = Array.from({ length: 20_000 }, () => "1").join(",");
  const refs = Array.from({ length: 300 }, () => "*big").join(",");
  const bomb = `x-big: &big [${list}]\nx-many: [${refs}]\n${HEAD}` +
    "  /: { type: redirect, target: https://example.com }\n";
  const started = performance.now();
  const issues = problems(bomb);
  const took = performance.now() - started;
  assert.deepEqual(issues, [
    "c.yaml:1:1: error: YAML aliases expand too far: they repeat 6000000 values, over the " +
    "1000000 an alias may add\n  fix: Use fewer aliases (*name) or smaller anchored values",
  ]);
  assert.ok(took < 5_000, `took ${Math.round(took)} ms`);
  // An anchored route reused by a few hundred routes is fine.
  const shared = "x-route: &route\n  type: proxy\n  target: http://127.0.0.1:8080\n" +
    "  timeouts: { connect: 2s, total: 30s }\n  request_headers: { add: { X-A: a, X-B: b } }\n";
  const routes = Array.from({ length: 500 }, (_, i) => `  /r${i}: *route\n`).join("");
  assert.deepEqual(parseConfig(`${shared}${HEAD}${routes}`, "c.yaml").issues, []);
});

Deno.test("parseConfig resolves many aliases in linear time", () => {
  // Each alias was resolved by walking the document from its start: 10,000 aliases (30 KB)
  // took 13 s, and a config of a few hundred KB of them held Prox for hours.
  const refs = Array.from({ length: 20_000 }, () => "*one").join(",");
  const text = `x-one: &one 1\nx-many: [${refs}]\n${HEAD}` +
    "  /: { type: redirect, target: https://example.com }\n";
  const started = performance.now();
  const issues = problems(text);
  const took = performance.now() - started;
  assert.equal(issues.length, 1);
  assert.match(issues[0], /^c\.yaml:1:1: error: YAML aliases expand too far/);
  assert.ok(took < 5_000, `took ${Math.round(took)} ms`);
});

Deno.test("parseConfig says a line is indented with a non-breaking space (copied from a page)", () => {
  const text = `${HEAD}\u00a0 /:\n    type: redirect\n    target: https://example.com\n`;
  assert.deepEqual(problems(text), [
    "c.yaml:3:1: error: The line is indented with a non-breaking space (U+00A0), which YAML " +
    "does not read as a space\n  fix: Replace the non-breaking spaces with ordinary ones (they " +
    "come with text copied from a web page or a word processor)",
  ]);
  // Inside a value it is text like any other.
  assert.deepEqual(
    parseConfig(`${HEAD}  /:\n    type: respond\n    body: "a\u00a0b"\n`).issues,
    [],
  );
});

Deno.test("parseConfig says lists nested thousands deep nest too deeply (the parser overflowed)", () => {
  // `- - - …` 10,000 deep (20 KB): the YAML parser ran out of stack, and prox validate said the
  // operating system refused to read the file.
  const text = `x-deep:\n  ${"- ".repeat(10_000)}1\n${HEAD}` +
    "  /: { type: redirect, target: https://example.com }\n";
  assert.deepEqual(problems(text), [
    "c.yaml:2:3: error: YAML syntax error: The value nests too deeply (lists or mappings inside " +
    "each other thousands of times)\n  fix: Write it with a few levels of nesting",
  ]);
});

Deno.test("parseConfig refuses control characters in the text, as YAML (and libyaml) do", () => {
  // A BEL in a route key made a route no request can reach; a NUL went out in a body.
  const text =
    `${HEAD}  /a:\n    type: respond\n    body: "a\u0000b"\n  /x\u0007:\n    type: respond\n`;
  assert.deepEqual(problems(text), [
    "c.yaml:5:13: error: The config holds a control character (U+0000), which YAML does not " +
    'allow in a file\n  fix: Remove it; inside a double-quoted value write it as an escape ("\\0", ' +
    '"\\x07")',
    "c.yaml:6:5: error: The config holds a control character (U+0007), which YAML does not " +
    'allow in a file\n  fix: Remove it; inside a double-quoted value write it as an escape ("\\0", ' +
    '"\\x07")',
  ]);
  // Written as escapes they are text like any other.
  assert.deepEqual(
    parseConfig(`${HEAD}  /a:\n    type: respond\n    body: "a\\x07b"\n`).issues,
    [],
  );
  // UTF-16 without a byte-order mark decodes as UTF-8 with a NUL after each character.
  const utf16 = [...'listen_addr: "127.0.0.1:3000"\n'].map((c) => `${c}\u0000`).join("");
  assert.deepEqual(problems(utf16), [
    "c.yaml:1:2: error: The config holds a control character (U+0000), which YAML does not " +
    "allow in a file\n  fix: The file looks like UTF-16 (Notepad's \"Unicode\", PowerShell's " +
    "> and Out-File): save it as UTF-8",
  ]);
});
