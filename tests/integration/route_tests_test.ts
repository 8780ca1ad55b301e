// `prox test`: table-driven routing checks run from the CLI, against a real config and files.
import assert from "node:assert/strict";
import { ROOT, run } from "../_harness.ts";

const prox = (args: string[], cwd: string) =>
  run(Deno.execPath(), ["run", "-A", "--config", `${ROOT}/deno.json`, `${ROOT}/mod.ts`, ...args], {
    cwd,
  });

const CONFIG = `listen_addr: "127.0.0.1:3000"
trusted_proxies: []
error_pages: { 404: ./404.html }
routes:
  "/api":
    type: proxy
    target: "http://10.0.0.2:8080"
    path_rewrite: /v2
    request_headers: { remove: [Cookie], add: { X-From: prox } }
  "api.example.com/":
    type: load_balance
    targets: ["http://10.0.0.3:80", "http://10.0.0.4:80"]
  "/old": { type: redirect, target: /new, status_code: 308 }
  "/": { type: static, root: ./www }
`;

Deno.test("prox test: passing cases exit 0; a failing one says where and what, exit 1", async () => {
  const dir = await Deno.makeTempDir({ prefix: "prox-routetests-" });
  try {
    await Deno.mkdir(`${dir}/www`);
    await Deno.writeTextFile(`${dir}/www/index.html`, "<h1>hi</h1>");
    await Deno.writeTextFile(`${dir}/config.yaml`, CONFIG);
    await Deno.writeTextFile(`${dir}/404.html`, "<h1>{uri_path}: none here</h1>");
    await Deno.writeTextFile(
      `${dir}/ok.yaml`,
      `- name: the API, rewritten, query kept
  request: GET http://localhost/api/users?page=2
  headers: { Cookie: "s=1", Accept: text/plain }
  expect:
    route: /api
    action: proxy
    upstream: http://10.0.0.2:8080/v2/users?page=2
    target: http://10.0.0.2:8080
    headers: { X-From: prox, Cookie: null, Accept: text/plain, X-Forwarded-Proto: http }
- request: https://api.example.com/x
  expect: { route: api.example.com/, action: load_balance }
- request: POST /old/a?b=1
  expect: { status: 308, location: /new/a?b=1 }
- request: /index.html
  expect: { action: static, file: ./www/index.html, status: 200 }
- request: http://localhost/nothing-here.txt
  expect: { route: /, status: 404, page: ./404.html }
`,
    );
    const ok = await prox(["test", "ok.yaml"], dir);
    assert.equal(ok.code, 0, ok.stdout + ok.stderr);
    assert.match(ok.stdout, /^ok {3}the API, rewritten, query kept$/m);
    assert.match(ok.stdout, /5 passed, 0 failed/);

    await Deno.writeTextFile(
      `${dir}/bad.yaml`,
      `- request: /api/x
  expect:
    route: /
    headers: { Cookie: "s=1" }
- request: /old
  expect: { status: 301 }
- request: /api/x
  client_ip: 10.0.0.300
  expect: { route: /api }
- request: /api/x
  headers: { "Bad Name": x }
  expect: { route: /api }
`,
    );
    const bad = await prox(["test", "-c", "config.yaml", "bad.yaml"], dir);
    assert.equal(bad.code, 1);
    assert.match(bad.stdout, /^FAIL \/api\/x$/m);
    assert.match(bad.stdout, /bad\.yaml:3:5: route: expected "\/", got "\/api"/);
    assert.match(bad.stdout, /bad\.yaml:4:16: header Cookie: expected "s=1", got none/);
    assert.match(bad.stdout, /bad\.yaml:6:13: status: expected 301, got 308/);
    // A request no client can send is said at the key that makes it so (a bad header name
    // ended the whole run with a stack trace).
    assert.match(bad.stdout, /bad\.yaml:8:3: invalid client address "10\.0\.0\.300"/);
    assert.match(bad.stdout, /bad\.yaml:11:3: invalid header "Bad Name: x"/);
    assert.match(bad.stdout, /0 passed, 4 failed/);

    // A mistake in the tests file is located, with a suggestion.
    await Deno.writeTextFile(`${dir}/typo.yaml`, "- request: /x\n  expect: { rout: /x }\n");
    const typo = await prox(["test", "typo.yaml"], dir);
    assert.equal(typo.code, 1);
    assert.match(typo.stderr, /typo\.yaml:2:13: error: 0\.expect\.rout: Unknown key "rout"/);
    assert.match(typo.stderr, /Did you mean "route"\?/);
    const usage = await prox(["test"], dir);
    assert.equal(usage.code, 2);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("prox test: a respond route's action is respond, as prox explain names it", async () => {
  const dir = await Deno.makeTempDir({ prefix: "prox-routetests-" });
  try {
    await Deno.writeTextFile(
      `${dir}/config.yaml`,
      `listen_addr: "127.0.0.1:3000"\nroutes:\n  /healthz: { type: respond, status: 204 }\n`,
    );
    await Deno.writeTextFile(
      `${dir}/t.yaml`,
      "- request: /healthz\n  expect: { route: /healthz, action: respond, status: 204 }\n",
    );
    const r = await prox(["test", "t.yaml"], dir);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /1 passed, 0 failed/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
