// What a route's `tls.ca_cert` trusts beside a client certificate: the CA file is the whole trust
// (README, "Client certificates"), whichever client carries the connection. The process trusts
// a CA through DENO_CERT, as a system root would be, and the route names another.

import assert from "node:assert/strict";
import { ROOT, waitFor } from "../_harness.ts";
import { freePort, spawnProx } from "./_cli_process.ts";
import { closed, connect, messages, wssUpstream } from "./_ws.ts";

const TLS = `${ROOT}/tests/fixtures/tls`;

Deno.test("wss upstream with client_cert: a certificate from outside tls.ca_cert is refused, as over HTTP/1.1", async () => {
  await using up = await wssUpstream({
    cert: Deno.readTextFileSync(`${TLS}/cert.pem`),
    key: Deno.readTextFileSync(`${TLS}/key.pem`),
  });
  const port = freePort();
  const dir = await Deno.makeTempDir({ prefix: "prox-uptls-" });
  const client = `client_cert: "${TLS}/alice.pem", client_key: "${TLS}/alice.key"`;
  await Deno.writeTextFile(
    `${dir}/prox.yaml`,
    `listen_addr: "127.0.0.1:${port}"
health_check: { enabled: false }
routes:
  "/other-ca":
    type: websocket
    target: "${up.url}"
    tls: { ca_cert: "${TLS}/stranger.pem", ${client} }
  "/own-ca":
    type: websocket
    target: "${up.url}"
    tls: { ca_cert: "${TLS}/ca.pem", ${client} }
  "/http":
    type: proxy
    target: "${up.url.replace("wss:", "https:")}"
    tls: { ca_cert: "${TLS}/stranger.pem", ${client} }
`,
  );
  try {
    await using prox = spawnProx(["serve", "-c", "prox.yaml"], {
      cwd: dir,
      env: {
        DENO_CERT: `${TLS}/ca.pem`,
        ...(Deno.env.get("PROX_H1_ENGINE")
          ? { PROX_H1_ENGINE: Deno.env.get("PROX_H1_ENGINE")! }
          : {}),
      },
    });
    // Over HTTP/1.1 (node:tls) the route's CA alone is trusted: 502.
    const res = await waitFor(() => fetch(`http://127.0.0.1:${port}/http`), {
      timeoutMs: 15_000,
      what: `Prox to answer\n${prox.output()}`,
    });
    await res.body?.cancel();
    assert.equal(res.status, 502);
    // Its CA signed the upstream's certificate: the WebSocket opens.
    const ok = await connect(`ws://127.0.0.1:${port}/own-ca`);
    const got = messages(ok, 1);
    ok.send("trusted");
    assert.equal((await got)[0].data.toString(), "trusted");
    ok.close();
    await closed(ok);
    // Another CA: the process-wide trust (DENO_CERT) must not let the upstream in.
    const ws = await connect(`ws://127.0.0.1:${port}/other-ca`).catch((e: Error) => e);
    if (!(ws instanceof Error)) {
      const c = closed(ws);
      ws.send("untrusted");
      const first = await Promise.race([messages(ws, 1), c]);
      if (Array.isArray(first)) ws.close();
      assert.equal(Array.isArray(first) ? "open" : (first as { code: number }).code, 1014);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
