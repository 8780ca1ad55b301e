import assert from "node:assert/strict";
import { formatIssue, loadConfigText } from "./load.ts";

const HEAD = 'listen_addr: "127.0.0.1:3000"\nroutes:\n';

const issues = (routes: string) =>
  loadConfigText(`${HEAD}${routes}`, { file: "c.yaml", env: { exists: () => true } }).issues
    .map(formatIssue);

Deno.test("validate: a redirect target with a scheme that is no URL is an error at its line", () => {
  // Each was loaded, and then every request to the route failed with a 500 (URL parsing threw).
  for (const target of ["ftp://a b/c", "myapp://host:99999/", "foo://[x"]) {
    assert.deepEqual(issues(`  /x: { type: redirect, target: "${target}" }\n`), [
      `c.yaml:3:25: error: routes./x.target: Invalid redirect URL "${target}"`,
    ], target);
  }
  // As before: an http(s) one once, and URLs of other schemes, paths and relative ones load.
  assert.deepEqual(issues('  /x: { type: redirect, target: "https://a b" }\n'), [
    'c.yaml:3:25: error: routes./x.target: Invalid redirect URL "https://a b"',
  ]);
  for (const target of ["itms-apps://apps.apple.com/app/id1", "ftp://files.example/pub", "/y"]) {
    assert.deepEqual(issues(`  /x: { type: redirect, target: "${target}" }\n`), [], target);
  }
});

const TLS = 'listen_addr: "127.0.0.1:3000"\ntls: { cert_path: c.pem, key_path: k.pem }\nroutes:\n';
const tlsIssues = (routes: string) =>
  loadConfigText(`${TLS}${routes}`, { file: "c.yaml", env: { exists: () => true } }).issues
    .map(formatIssue);

Deno.test("validate: an absolute redirect target on one of the route's own hosts that the route serves again is a loop warning", () => {
  // `https://example.com` answered from example.com itself: the browser gives up after ~20 hops.
  assert.deepEqual(
    tlsIssues('  "example.com/": { type: redirect, target: "https://example.com" }\n'),
    [
      'c.yaml:4:37: warning: routes.example.com/.target: Redirect target "https://example.com" ' +
      "is served by this route again: every request to it redirects in a loop\n" +
      '  fix: Point it outside "/"',
    ],
  );
  assert.match(
    tlsIssues(
      '  /old: { type: redirect, target: "HTTPS://WWW.Example.com:8443/old/x?y", hosts: [www.example.com] }\n',
    ).join(),
    /Redirect target "HTTPS:\/\/WWW\.Example\.com:8443\/old\/x\?y" is served by this route again/,
  );
  assert.match(
    tlsIssues('  /: { type: redirect, target: "https://a.example/", hosts: ["*.example"] }\n')
      .join(),
    /is served by this route again/,
  );
  // Without tls Prox serves http: an http target on its host loops, an https one is elsewhere
  // (Prox on port 80 sending its hosts to another server's HTTPS).
  assert.match(
    issues('  "example.com/": { type: redirect, target: "http://example.com/" }\n').join(),
    /is served by this route again/,
  );
  assert.deepEqual(
    issues('  "example.com/": { type: redirect, target: "https://example.com/" }\n'),
    [],
  );
  // Not loops: another host (www. to the apex, the usual canonical-host redirect), another
  // path with its own route, a route for every host (the target may be another server), or
  // http from an https site (the http_redirect listener's business).
  const fine = [
    '  "www.example.com/": { type: redirect, target: "https://example.com" }\n',
    '  "example.com/": { type: redirect, target: "https://example.com/app" }\n  "example.com/app": { type: static, root: . }\n',
    '  /old: { type: redirect, target: "https://example.com/old" }\n',
    '  "example.com/": { type: redirect, target: "http://example.com/" }\n',
  ];
  for (const routes of fine) assert.deepEqual(tlsIssues(routes), [], routes);
});

Deno.test("validate: a conditional redirect (match) is no certain loop, wherever it is written", () => {
  // Redirecting a legacy query away: the redirected request no longer has it, and goes to "/".
  const legacy = '  "/#legacy": { type: redirect, target: "/", match: { query_has: legacy } }\n';
  const proxy = '  /: { type: proxy, target: "http://127.0.0.1:8080" }\n';
  assert.deepEqual(issues(legacy + proxy), []);
  assert.deepEqual(issues(proxy + legacy), []);
  // An unconditional redirect whose target only a conditional route names loops when that
  // route's match does not hold: warned as before.
  assert.match(
    issues(
      '  /a: { type: redirect, target: "/a/b" }\n' +
        '  "/a/b#c": { type: proxy, target: "http://127.0.0.1:8080", match: { method_is: POST } }\n',
    ).join(),
    /is served by this route again/,
  );
});

Deno.test("validate: a placeholder in a redirect target is warned about (it is sent as written)", () => {
  // Caddy's `redir https://{host}{uri}` written here loaded without a word, and every client was
  // sent to a host named "{host}" (or a path holding "{uri}").
  assert.deepEqual(issues('  /x: { type: redirect, target: "https://{host}/new" }\n'), [
    "c.yaml:3:25: warning: routes./x.target: {host} is no placeholder in a redirect target: " +
    "it is sent as written\n  fix: Write the host itself; the rest of the path and the query " +
    "follow the target (keep_query)",
  ]);
  assert.equal(issues('  /x: { type: redirect, target: "/new{uri}" }\n').length, 1);
  assert.deepEqual(issues('  /x: { type: redirect, target: "/new/{}/a" }\n'), []);
});
