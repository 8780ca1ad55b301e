import assert from "node:assert/strict";
import { silentLogger } from "../ports.ts";
import type { ClientInfo } from "../ports.ts";
import { recent } from "../proxy/recent.ts";
import { listen } from "./http_serve.ts";

Deno.test("listener: the handler gets ClientInfo, and the last request's Deno.serve info stays reachable (recent.ts)", async () => {
  const seen: ClientInfo[] = [];
  const l = listen({ hostname: "127.0.0.1", port: 0 }, {
    handler: (_req, info) => {
      seen.push(info);
      return Promise.resolve(new Response("ok"));
    },
    logger: silentLogger,
  });
  try {
    for (const path of ["/a", "/b"]) {
      const res = await fetch(`http://127.0.0.1:${l.port}${path}`);
      assert.equal(await res.text(), "ok");
    }
    assert.equal(seen.length, 2);
    assert.equal(seen[1].remoteAddr.hostname, "127.0.0.1");
    assert.equal(seen[1].protocol, "http/1.1");
    // The info object Deno.serve handed over for the last request (not Prox's ClientInfo); its
    // fields can no longer be read once the request is done, which is fine: it is only held.
    const info = recent.serverInfo as Deno.ServeHandlerInfo;
    assert.equal(info?.constructor.name, "ServeHandlerInfo");
    assert.ok(info.completed instanceof Promise);
  } finally {
    await l.close();
  }
});
