// What a route's `tls.ca_cert` trusts beside a client certificate: the CA file is the whole trust
// (README, "Client certificates"), whichever client carries the connection. The process trusts
// a CA through DENO_CERT, as a system root would be, and the route names another.

import assert from "node:assert/strict";
import { interopTest, ROOT, run, waitFor } from "../_harness.ts";
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

/** Runs openssl with `args` in `cwd`; fails the test if it fails. */
async function openssl(cwd: string, ...args: string[]): Promise<void> {
  const out = await run("openssl", args, { cwd });
  assert.equal(out.code, 0, out.stderr);
}

/** A CA of its own (`other-ca.pem`) and a leaf for localhost it signed (`other.pem`/`.key`). */
async function otherCa(dir: string): Promise<void> {
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
  await openssl(
    dir,
    "req",
    "-x509",
    ...ec,
    "-keyout",
    "other-ca.key",
    "-out",
    "other-ca.pem",
    "-days",
    "2",
    "-subj",
    "/CN=Other Test CA",
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign",
  );
  await openssl(
    dir,
    "req",
    ...ec,
    "-keyout",
    "other.key",
    "-out",
    "other.csr",
    "-subj",
    "/CN=localhost",
  );
  await Deno.writeTextFile(`${dir}/ext`, "subjectAltName=DNS:localhost\n");
  await openssl(
    dir,
    "x509",
    "-req",
    "-in",
    "other.csr",
    "-CA",
    "other-ca.pem",
    "-CAkey",
    "other-ca.key",
    "-CAcreateserial",
    "-out",
    "other.pem",
    "-extfile",
    "ext",
    "-days",
    "2",
  );
}

/**
 * A TCP front that sends its first connection to `first` and every later one to `later`: an
 * upstream address whose certificate changes between connections (a DNS change, an attacker).
 */
function switchingFront(first: number, later: number) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns: Deno.Conn[] = [];
  let n = 0;
  const pipes: Promise<unknown>[] = [];
  (async () => {
    for await (const down of listener) {
      const port = n++ === 0 ? first : later;
      conns.push(down);
      pipes.push(
        (async () => {
          const up = await Deno.connect({ hostname: "127.0.0.1", port });
          conns.push(up);
          await Promise.allSettled([
            down.readable.pipeTo(up.writable),
            up.readable.pipeTo(down.writable),
          ]);
        })().catch(() => {}),
      );
    }
  })().catch(() => {});
  return {
    port: (listener.addr as Deno.NetAddr).port,
    async [Symbol.asyncDispose]() {
      listener.close();
      for (const c of conns) {
        try {
          c.close();
        } catch { /* closed */ }
      }
      await Promise.allSettled(pipes);
    },
  };
}

interopTest(
  "h2 upstream with client_cert: a certificate from outside tls.ca_cert is refused after ALPN chose h2",
  [
    "openssl",
  ],
  async () => {
    const dir = await Deno.makeTempDir({ prefix: "prox-uptls-h2-" });
    try {
      await otherCa(dir);
      const serve = (name: string, cert: string, key: string) =>
        Deno.serve(
          { hostname: "127.0.0.1", port: 0, cert, key, onListen() {} },
          () => new Response(name),
        );
      // The route's CA signed A's certificate; B's comes from the CA the process trusts.
      await using a = serve(
        "A",
        Deno.readTextFileSync(`${TLS}/cert.pem`),
        Deno.readTextFileSync(`${TLS}/key.pem`),
      );
      await using b = serve(
        "B",
        Deno.readTextFileSync(`${dir}/other.pem`),
        Deno.readTextFileSync(`${dir}/other.key`),
      );
      await using front = switchingFront(a.addr.port, b.addr.port);
      const port = freePort();
      await Deno.writeTextFile(
        `${dir}/prox.yaml`,
        `listen_addr: "127.0.0.1:${port}"
health_check: { enabled: false }
routes:
  "/":
    type: proxy
    target: "https://localhost:${front.port}"
    tls: { ca_cert: "${TLS}/ca.pem", client_cert: "${TLS}/alice.pem", client_key: "${TLS}/alice.key" }
`,
      );
      await using prox = spawnProx(["serve", "-c", "prox.yaml"], {
        cwd: dir,
        env: {
          DENO_CERT: `${dir}/other-ca.pem`,
          ...(Deno.env.get("PROX_H1_ENGINE")
            ? { PROX_H1_ENGINE: Deno.env.get("PROX_H1_ENGINE")! }
            : {}),
        },
      });
      // A request fetch would send as built (README, "TLS upstreams"): h2 once ALPN chose it.
      const headers = {
        "user-agent": "t",
        accept: "*/*",
        "accept-language": "en",
        "accept-encoding": "identity",
      };
      const res = await waitFor(() => fetch(`http://127.0.0.1:${port}/`, { headers }), {
        timeoutMs: 15_000,
        what: `Prox to answer\n${prox.output()}`,
      });
      const body = await res.text();
      // The ALPN probe went to A (verified under ca.pem alone); the request's connection to B must
      // be verified the same way.
      assert.notEqual(body, "B", "B's certificate was accepted through the process-wide roots");
      assert.equal(res.status, 502, body);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);
