// The Host field of a proxied WebSocket handshake: as a request header rule or preserve_host
// says, once, as for plain HTTP requests on the same route.

import assert from "node:assert/strict";
import { closed, connect, startWsProxy, wsUpstream } from "./_ws.ts";

/** The Host fields of a handshake request as they came (node keeps repeated ones in rawHeaders). */
function hostFields(raw: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < raw.length; i += 2) if (raw[i].toLowerCase() === "host") out.push(raw[i + 1]);
  return out;
}

Deno.test("websocket: a request_headers rule's Host reaches the upstream handshake, as on HTTP", async () => {
  await using up = await wsUpstream();
  await using prox = await startWsProxy(`
routes:
  "/":
    type: proxy
    target: "http://127.0.0.1:${up.port}"
    request_headers: { set: { Host: vhost.example, X-A: "1" } }
`);
  const ws = await connect(`${prox.ws}/`);
  ws.close(1000, "done");
  await closed(ws);
  const req = up.requests[0];
  assert.equal(req.headers["x-a"], "1");
  // Was the target's address: the rule's Host was dropped by Deno's WebSocket client.
  assert.deepEqual(hostFields(req.rawHeaders), ["vhost.example"]);
});

Deno.test("websocket: a preserved Host holding $& or $' goes upstream once and as sent", async () => {
  await using up = await wsUpstream();
  await using prox = await startWsProxy(`
routes:
  "/":
    type: proxy
    target: "http://127.0.0.1:${up.port}"
    preserve_host: true
`);
  // `$` and `'` are sub-delims, valid in a reg-name (RFC 3986 §3.2.2). They were read as
  // String.replace patterns, which copied parts of the head into the Host line: two Host
  // fields ("a", then the target's address), or every field after Host a second time (which
  // the upstream refused with 400).
  for (const host of ["a$&b.example", "c$'d.example"]) {
    const ws = await connect(`${prox.ws}/`, [], { headers: { host } });
    ws.close(1000, "done");
    await closed(ws);
    const req = up.requests.at(-1)!;
    assert.deepEqual(hostFields(req.rawHeaders), [host]);
    assert.equal(req.rawHeaders.filter((n) => /^sec-websocket-key$/i.test(n)).length, 1);
  }
});
