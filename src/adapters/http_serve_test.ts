import assert from "node:assert/strict";
import { silentLogger } from "../ports.ts";
import type { ClientInfo } from "../ports.ts";
import { recent } from "../proxy/recent.ts";
import { listen } from "./http_serve.ts";
import { ProxyError } from "../domain/errors.ts";
import { FileChangedError } from "../ports.ts";
import { waitFor } from "../../tests/_harness.ts";
import { memoryLogger } from "../../tests/integration/_acme.ts";

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

Deno.test("listener: a response body that fails mid-way with a ProxyError is a warning, not an unhandled error", async () => {
  const logger = memoryLogger();
  const l = listen({ hostname: "127.0.0.1", port: 0 }, {
    handler: () => {
      let sent = false;
      const body = new ReadableStream<Uint8Array>({
        pull(c) {
          if (sent) c.error(new ProxyError("timeout", 'Upstream "http://u" was idle for 10 ms'));
          else c.enqueue(new TextEncoder().encode("part"));
          sent = true;
        },
      });
      return Promise.resolve(new Response(body));
    },
    logger,
  });
  try {
    const res = await fetch(`http://127.0.0.1:${l.port}/`);
    await assert.rejects(res.text());
    await waitFor(() => logger.lines.length > 0, { what: "a log line" });
    assert.deepEqual(logger.lines.filter((x) => x.startsWith("error")), []);
    assert.match(logger.lines[0], /^warn Response body failed .*"kind":"timeout"/);
  } finally {
    await l.close();
  }
});

Deno.test("listener: a static file that shrinks while being sent is a warning naming it, not an unhandled error", async () => {
  const logger = memoryLogger();
  const l = listen({ hostname: "127.0.0.1", port: 0 }, {
    handler: () => {
      let sent = false;
      const body = new ReadableStream<Uint8Array>({
        pull(c) {
          if (sent) c.error(new FileChangedError("/srv/www/big.iso"));
          else c.enqueue(new TextEncoder().encode("part"));
          sent = true;
        },
      });
      return Promise.resolve(new Response(body, { headers: { "content-length": "100" } }));
    },
    logger,
  });
  try {
    const res = await fetch(`http://127.0.0.1:${l.port}/`);
    await assert.rejects(res.text());
    await waitFor(() => logger.lines.length > 0, { what: "a log line" });
    assert.deepEqual(logger.lines.filter((x) => x.startsWith("error")), []);
    assert.match(
      logger.lines[0],
      /^warn Response body failed .*big\.iso.* shrank while being sent/,
    );
  } finally {
    await l.close();
  }
});
