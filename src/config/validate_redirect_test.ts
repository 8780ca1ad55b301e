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
