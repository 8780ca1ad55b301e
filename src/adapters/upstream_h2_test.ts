// The fetch-based HTTP/2 client (origins that chose h2 by ALPN): how its failures are reported.
import assert from "node:assert/strict";
import { createH2Client } from "./upstream_h2.ts";
import { rejects, request } from "../../tests/_upstream_peers.ts";

Deno.test("createH2Client: a refused connection is a connect failure that sent nothing, and says so", async () => {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  const client = createH2Client();
  try {
    const e = await rejects(
      client.send(request(`https://127.0.0.1:${port}/x?token=abc`, { method: "POST" })),
      "connect",
    );
    // Nothing reached the upstream: even a POST may go to another target.
    assert.equal(e.sentNothing, true);
    assert.match(e.message, /^Cannot reach upstream "https:\/\/127\.0\.0\.1:\d+": .*refused/i);
    // fetch's cause names the URL: the request's query (a client's token) stays out of the log.
    assert.doesNotMatch(e.message, /token=abc|fetch failed/);
  } finally {
    await client.close();
  }
});
