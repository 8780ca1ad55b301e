import assert from "node:assert/strict";
import { formatIssue, loadConfigText } from "./load.ts";

const HEAD = 'listen_addr: "127.0.0.1:0"\nroutes: { /r: { type: redirect, target: /x } }\n';

function issues(yaml: string, files: Record<string, string> = {}): string[] {
  const r = loadConfigText(HEAD + yaml, {
    file: "c.yaml",
    env: {
      exists: (p) => p in files,
      stat: (p) => p in files ? { isFile: true, size: files[p].length } : null,
      readText: (p) => ({ text: files[p] }),
    },
  });
  return r.issues.map(formatIssue);
}

Deno.test("validatePages: a missing or oversized page file is located, with the fix", () => {
  assert.deepEqual(
    issues("error_pages:\n  404: gone.html\n  5xx: { file: big.html }\n", {
      "big.html": "x".repeat(256 * 1024 + 1),
    }),
    [
      "c.yaml:4:3: error: error_pages.404: Page file not found: gone.html\n" +
      "  fix: Create the file or fix the path (relative to the working directory)",
      "c.yaml:5:10: error: error_pages.5xx.file: Page file big.html is 262145 bytes, over the 256 KiB limit\n" +
      "  fix: Keep pages small: serve images, fonts and styles from a static route and link them",
    ],
  );
});

Deno.test("validatePages: keys as narrow for one status are a warning", () => {
  assert.deepEqual(
    issues('error_pages:\n  404: { body: a }\n  "404, 410": { body: b }\n  5xx: { body: c }\n'),
    [
      'c.yaml:5:3: warning: error_pages.404, 410: "404" and "404, 410" both give 404 a page: one ' +
      "of them is never used there\n" +
      "  fix: Give each status one page (a narrower key wins over a wider one: 502 over 5xx)",
    ],
  );
});

Deno.test("validatePages: intercept_upstream without any page is a warning", () => {
  const r = loadConfigText(
    'listen_addr: "127.0.0.1:0"\nroutes:\n  /: { type: proxy, target: "http://a", intercept_upstream: true }\n',
    { file: "c.yaml", env: { exists: () => true } },
  );
  assert.deepEqual(r.issues.map(formatIssue), [
    "c.yaml:3:41: warning: routes./.intercept_upstream: intercept_upstream has no effect: no " +
    "error_pages apply to this route\n" +
    "  fix: Add error_pages (here or at the top level), e.g. error_pages: { 5xx: pages/5xx.html }",
  ]);
});
