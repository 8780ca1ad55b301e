// HTTP/3 on a dual-stack listener (`listen_addr: "[::]:443"`): the address it logs and the client
// address IPv4 clients get.
import assert from "node:assert/strict";
import { ROOT } from "../_harness.ts";
import { recordingLogger } from "./_ws.ts";
import { startH3Listener } from "../../src/adapters/h3/mod.ts";
import { connectH3 } from "../../src/adapters/h3/client.ts";

const TLS = `${ROOT}/tests/fixtures/tls`;
const cert = Deno.readTextFileSync(`${TLS}/cert.pem`);
const key = Deno.readTextFileSync(`${TLS}/key.pem`);
const ca = Deno.readTextFileSync(`${TLS}/ca.pem`);

Deno.test("startH3Listener on [::] logs [::]:port and names an IPv4 client as IPv4", async () => {
  const logger = recordingLogger();
  const l = await startH3Listener({
    hostname: "::",
    port: 0,
    cert,
    key,
    logger,
    handler: (_req, info) => Promise.resolve(new Response(info.remoteAddr.hostname)),
  });
  try {
    const listening = logger.records.find((r) => r.msg === "HTTP/3 listening");
    assert.equal(listening?.address, `[::]:${l.port}`, "was :::PORT, the port unreadable");
    const c = await connectH3({ hostname: "127.0.0.1", port: l.port, caCerts: [ca] });
    try {
      const res = await c.request("/");
      assert.equal(res.status, 200);
      assert.equal(new TextDecoder().decode(res.body), "127.0.0.1");
    } finally {
      await c[Symbol.asyncDispose]();
    }
  } finally {
    await l.shutdown(0);
  }
});
