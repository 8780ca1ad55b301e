// `type: respond` routes: fixed answers from Prox itself, over a real listener, with placeholders,
// header rules, HEAD, compression and conditional routes; and what validate says about them.
import assert from "node:assert/strict";
import { startProxy } from "./_proxy.ts";
import { loadConfigText } from "../../src/config/load.ts";

const CONFIG = `
health_check: { enabled: false }
routes:
  /healthz: { type: respond, body: "ok\\n" }
  /gone: { type: respond, status: 410 }
  /maintenance:
    type: respond
    status: 503
    content_type: "text/html; charset=utf-8"
    body: "<p>Back soon ({request_id} on {host})</p>"
    response_headers: { set: { Retry-After: "120" } }
  /big:
    type: respond
    body: "${"x".repeat(4096)}"
    compress: { algorithms: [gzip] }
  /only-get#post:
    type: respond
    status: 405
    match: { method_is: POST }
    response_headers: { set: { Allow: GET } }
  /only-get: { type: respond, body: got }
`;

Deno.test("respond: fixed answers with their status, body, type and placeholders", async () => {
  await using prox = await startProxy(CONFIG);
  const ok = await fetch(`${prox.url}/healthz`);
  assert.equal(ok.status, 200);
  assert.equal(ok.headers.get("content-type"), "text/plain; charset=utf-8");
  assert.equal(await ok.text(), "ok\n");

  const gone = await fetch(`${prox.url}/gone/anything?x=1`);
  assert.equal(gone.status, 410);
  assert.equal(await gone.text(), "");

  const down = await fetch(`${prox.url}/maintenance`);
  assert.equal(down.status, 503);
  assert.equal(down.headers.get("retry-after"), "120");
  assert.equal(down.headers.get("content-type"), "text/html; charset=utf-8");
  // A fresh request id per answer, and the host the client asked for.
  const page = await down.text();
  assert.match(
    page,
    new RegExp(`^<p>Back soon \\(\\S+-\\d+ on 127\\.0\\.0\\.1:${prox.port}\\)</p>$`),
  );
  const again = await (await fetch(`${prox.url}/maintenance`)).text();
  assert.notEqual(again, page);

  // HEAD: the length of the GET's body, none of its bytes.
  const head = await fetch(`${prox.url}/healthz`, { method: "HEAD" });
  assert.equal(head.headers.get("content-length"), "3");
  assert.equal(await head.text(), "");

  const big = await fetch(`${prox.url}/big`, { headers: { "accept-encoding": "gzip" } });
  assert.equal(big.headers.get("content-encoding"), "gzip");
  assert.equal(await big.text(), "x".repeat(4096)); // fetch decodes it

  const post = await fetch(`${prox.url}/only-get`, { method: "POST", body: "x" });
  assert.equal(post.status, 405);
  assert.equal(post.headers.get("allow"), "GET");
  await post.body?.cancel();
  assert.equal(await (await fetch(`${prox.url}/only-get`)).text(), "got");
});

Deno.test("validate: a respond route's body where its status has no content", () => {
  const issues = (route: string) =>
    loadConfigText(`listen_addr: "127.0.0.1:0"\nroutes:\n  /: ${route}\n`, {
      file: "t.yaml",
      env: { exists: () => true },
    }).issues.map((i) => `${i.severity} ${i.path}: ${i.message}`);
  assert.deepEqual(issues("{ type: respond, status: 204 }"), []);
  assert.deepEqual(issues('{ type: respond, status: 204, body: "x" }'), [
    "error routes./.body: A 204 answer has no content: body would never be sent",
  ]);
  assert.match(issues("{ type: respond, status: 99 }").join(), /routes\.\/\.status/);
  assert.match(
    issues('{ type: respond, body: "{nope}" }').join(),
    /warning routes\.\/\.body: \{nope\} is no placeholder/,
  );
  assert.match(issues("{ type: respond, bodi: x }").join(), /Unknown key "bodi"/);
});
