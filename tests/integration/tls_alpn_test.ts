// ALPN on the TLS listener (RFC 7301), with real TLS clients: h2 and http/1.1 as offered, none
// offered, `http/1.0` alone (curl --http1.0), and a list Prox serves nothing of (acme-tls/1 or h3
// over TCP), on the main certificate's listener and on a tls.sni one.
import assert from "node:assert/strict";
import { ROOT, startUpstream } from "../_harness.ts";
import { onProxEngines, startProxy } from "./_proxy.ts";
import { readFrom } from "./_raw_client.ts";

onProxEngines();

const TLS = `${ROOT}/tests/fixtures/tls`;
const CA = Deno.readTextFileSync(`${TLS}/ca.pem`);

const config = (upstream: string) => `
health_check: { enabled: false }
tls:
  cert_path: "${TLS}/cert.pem"
  key_path: "${TLS}/key.pem"
  sni:
    - { cert_path: "${TLS}/other.pem", key_path: "${TLS}/other.key" }
routes:
  /: { type: proxy, target: "${upstream}" }
`;

/** The ALPN protocol chosen for `offer` (null: none), and the answer to an HTTP/1.0 GET on it. */
async function exchange(
  port: number,
  name: string,
  offer: string[] | undefined,
): Promise<[string | null, string]> {
  const c = await Deno.connectTls({
    hostname: "127.0.0.1",
    port,
    serverName: name,
    caCerts: [CA],
    ...(offer ? { alpnProtocols: offer } : {}),
  } as Deno.ConnectTlsOptions);
  try {
    const { alpnProtocol } = await c.handshake();
    if (alpnProtocol === "h2") return [alpnProtocol, ""];
    await c.write(new TextEncoder().encode(`GET / HTTP/1.0\r\nHost: ${name}\r\n\r\n`));
    const out = await readFrom(c);
    return [alpnProtocol, out.slice(0, out.indexOf("\r\n")) + " " + out.split("\r\n\r\n")[1]];
  } finally {
    c.close();
  }
}

Deno.test("ALPN: h2, http/1.1, none, and http/1.0 alone (curl --http1.0) are served", async () => {
  await using up = await startUpstream(() => new Response("ok"));
  await using prox = await startProxy(config(up.url), { tls: true });
  for (const name of ["localhost", "other.test"]) {
    assert.deepEqual(await exchange(prox.port, name, ["h2", "http/1.1"]), ["h2", ""]);
    assert.deepEqual(await exchange(prox.port, name, ["http/1.1"]), [
      "http/1.1",
      "HTTP/1.0 200 OK ok",
    ]);
    assert.deepEqual(await exchange(prox.port, name, undefined), [null, "HTTP/1.0 200 OK ok"]);
    // nginx offers http/1.0 too; a client that offers only it was refused the handshake
    // ("no application protocol") though Prox serves HTTP/1.0.
    assert.deepEqual(await exchange(prox.port, name, ["http/1.0"]), [
      "http/1.0",
      "HTTP/1.0 200 OK ok",
    ]);
    // http/1.1 is still chosen over http/1.0, h2 over both.
    assert.equal((await exchange(prox.port, name, ["http/1.0", "http/1.1"]))[0], "http/1.1");
    assert.equal((await exchange(prox.port, name, ["http/1.0", "h2"]))[0], "h2");
  }
});

Deno.test("ALPN: a list of nothing Prox serves (acme-tls/1, h3 over TCP) fails the handshake with an alert", async () => {
  // RFC 7301 §3.2: no_application_protocol. Not an answer in a protocol the client did not ask for.
  await using up = await startUpstream(() => new Response("ok"));
  await using prox = await startProxy(config(up.url), { tls: true });
  for (const name of ["localhost", "other.test"]) {
    for (const offer of [["acme-tls/1"], ["h3"]]) {
      await assert.rejects(
        () => exchange(prox.port, name, offer),
        /NoApplicationProtocol|no application protocol|alert/i,
      );
    }
  }
  // The listener goes on serving.
  assert.deepEqual(await exchange(prox.port, "localhost", ["http/1.1"]), [
    "http/1.1",
    "HTTP/1.0 200 OK ok",
  ]);
});

Deno.test("ALPN: http/1.0 alone is served with tls.client_auth too (node:tls's listener)", async () => {
  await using up = await startUpstream(() => new Response("ok"));
  await using prox = await startProxy(
    config(up.url).replace(
      "routes:",
      `  client_auth: { ca_cert: "${TLS}/ca.pem", mode: verify_if_given }\nroutes:`,
    ),
    { tls: true },
  );
  assert.deepEqual(await exchange(prox.port, "localhost", ["http/1.0"]), [
    "http/1.0",
    "HTTP/1.0 200 OK ok",
  ]);
  assert.equal((await exchange(prox.port, "localhost", ["http/1.0", "h2"]))[0], "h2");
});
