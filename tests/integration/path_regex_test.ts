// `path_regex`: regular-expression path rewriting (nginx's `rewrite`, Traefik's ReplacePathRegex)
// through a real Prox to a real upstream, and its validation.
import assert from "node:assert/strict";
import { startUpstream } from "../_harness.ts";
import { startProxy } from "./_proxy.ts";
import { loadConfigText } from "../../src/config/load.ts";

Deno.test("path_regex: the upstream gets the rewritten path and the query as sent", async () => {
  await using up = await startUpstream((req) => {
    const u = new URL(req.url);
    return new Response(u.pathname + u.search);
  });
  await using prox = await startProxy(`
health_check: { enabled: false }
routes:
  /api:
    type: proxy
    target: "${up.url}/svc"
    path_regex:
      - { match: '^/api/v1/users/(?P<id>\\d+)$', replace: "/users/$<id>" }
      - { match: '^/api/(v\\d+)/(.*)$', replace: "/$1-$2" }
    path_rewrite: /legacy
`);
  const get = async (path: string) => await (await fetch(`${prox.url}${path}`)).text();
  // Rust's (?P<name>…) as the seed's configs write it.
  assert.equal(await get("/api/v1/users/42?full=1"), "/svc/users/42?full=1");
  assert.equal(await get("/api/v2/orders"), "/svc/v2-orders");
  // No rule matches: the prefix is stripped and path_rewrite applies.
  assert.equal(await get("/api/other/x"), "/svc/legacy/other/x");
});

Deno.test("validate: path_regex regexes compile, replacements are paths without a query", () => {
  const issues = (rule: string) =>
    loadConfigText(
      `listen_addr: "127.0.0.1:3000"\nroutes:\n  /: { type: proxy, target: "http://b", path_regex: ${rule} }\n`,
      { file: "c.yaml", env: { exists: () => true } },
    ).issues.map((i) => i.message);
  assert.deepEqual(issues('{ match: "^/a/(.*)$", replace: "/b/$1" }'), []);
  assert.match(issues('{ match: "(", replace: "/b" }').join(), /Invalid regular expression/);
  assert.match(issues('{ match: "^/a", replace: "b" }').join(), /is no path/);
  assert.match(issues('[{ match: "^/a", replace: "/b?x=1" }]').join(), /cannot hold "\?"/);
});

Deno.test("path_regex: a result never climbs out of its replacement, nor starts with //", async () => {
  await using up = await startUpstream((req) => new Response(new URL(req.url).pathname));
  await using prox = await startProxy(`
health_check: { enabled: false }
routes:
  /api:
    type: proxy
    target: "${up.url}/svc"
    path_regex: { match: '^/api/(.*)\\.json$', replace: "/public/$1" }
  /b:
    type: proxy
    target: "${up.url}"
    path_regex: { match: '^/b', replace: "/" }
`);
  const get = async (path: string) => await (await fetch(`${prox.url}${path}`)).text();
  // "/api/...json" captures "..": a dot segment no client could send (normalization took it).
  assert.equal(await get("/api/...json"), "/svc/public/");
  assert.equal(await get("/api/x/...json"), "/svc/public/x/");
  assert.equal(await get("/api/a.b.json"), "/svc/public/a.b");
  // "//evil.example/x" reads as another host to a Location or URL built from it.
  assert.equal(await get("/b/evil.example/x"), "/evil.example/x");
});

Deno.test("validate: a replace naming a group the match does not have is an error", () => {
  const issues = (rule: string) =>
    loadConfigText(
      `listen_addr: "127.0.0.1:3000"\nroutes:\n  /: { type: proxy, target: "http://b", path_regex: ${rule} }\n`,
      { file: "c.yaml", env: { exists: () => true } },
    ).issues.map((i) => `${i.message} ${i.hint ?? ""}`);
  assert.deepEqual(issues(`{ match: '^/u/(?P<id>\\d+)$', replace: "/users/$<id>/$1$$" }`), []);
  // Rust's replacement syntax (${id}) would go upstream as written.
  assert.match(issues(`{ match: '^/u/(?P<id>\\d+)$', replace: "/users/\${id}" }`).join(), /\$<id>/);
  assert.match(issues(`{ match: '^/u/(\\d+)$', replace: "/users/$2" }`).join(), /no group 2/);
  assert.match(issues(`{ match: '^/u/(\\d+)$', replace: "/users/$<id>" }`).join(), /no group/);
});
