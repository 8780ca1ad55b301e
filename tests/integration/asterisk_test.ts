// `OPTIONS *` (asterisk-form, RFC 9112 §3.2.4) asks about the server as a whole: Prox answers it
// itself on HTTP/1.1, HTTP/2 and HTTP/3 (it went upstream as `OPTIONS /*` or `OPTIONS /`, a
// question about another resource), and `*` with another method is a 400. curl sends the
// request target as given (`--request-target`); HTTP/3 through Prox's own client.
import assert from "node:assert/strict";
import { interopTest, ROOT, run, startUpstream, waitFor } from "../_harness.ts";
import { onProxEngines, startProxy } from "./_proxy.ts";
import { connectH3 } from "../../src/adapters/h3/client.ts";
import { silentLogger } from "../../src/ports.ts";

// Prox's own engines answer these (PROX_H1_ENGINE=deno runs the suite on Deno.serve).
onProxEngines();

const TLS = `${ROOT}/tests/fixtures/tls`;

interopTest(
  "OPTIONS * is answered by Prox over HTTP/1.1, h2c and HTTP/2 without reaching the upstream",
  ["curl"],
  async () => {
    const seen: string[] = [];
    await using up = await startUpstream((req) => {
      seen.push(`${req.method} ${new URL(req.url).pathname}`);
      return new Response("upstream");
    });
    const lines: Record<string, unknown>[] = [];
    const logger = {
      ...silentLogger,
      info: (m: string, f?: Record<string, unknown>) => m === "access" && lines.push(f!),
    };
    const yaml = (tls: boolean) =>
      `${
        tls ? `tls: { cert_path: "${TLS}/cert.pem", key_path: "${TLS}/key.pem" }\n` : ""
      }health_check: { enabled: false }
log: { access_log: json }
routes:
  "/": { type: proxy, target: "${up.url}" }
`;
    await using plain = await startProxy(yaml(false), { logger });
    await using secure = await startProxy(yaml(true), { logger });
    const curl = async (args: string[], url: string) => {
      const out = await run("curl", ["-sS", "-i", "--request-target", "*", ...args, url]);
      assert.equal(out.code, 0, out.stderr);
      return out.stdout;
    };
    for (
      const [args, url] of [
        [["-X", "OPTIONS"], `http://127.0.0.1:${plain.port}/`],
        [["-X", "OPTIONS", "--http1.0"], `http://127.0.0.1:${plain.port}/`],
        [["-X", "OPTIONS", "--http2-prior-knowledge"], `http://127.0.0.1:${plain.port}/`],
        [
          ["-X", "OPTIONS", "--http2", "--cacert", `${TLS}/ca.pem`],
          `https://localhost:${secure.port}/`,
        ],
      ] as const
    ) {
      const got = await curl([...args], url);
      assert.match(got, /^HTTP\/[12](?:\.[01])? 200/, `${args.join(" ")}: ${got}`);
      assert.match(got, /^allow: GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS\r$/m);
      assert.match(got, /^content-length: 0\r$/m);
      assert.doesNotMatch(got, /upstream/);
    }
    // Another method with `*` is a 400 (curl sends the body-less GET as asked).
    const get = await curl([], `http://127.0.0.1:${plain.port}/`);
    assert.match(get, /^HTTP\/1\.1 400/);
    const h2get = await curl(["--http2-prior-knowledge"], `http://127.0.0.1:${plain.port}/`);
    assert.match(h2get, /^HTTP\/2 400/);
    assert.deepEqual(seen, []);
    await waitFor(() => lines.length === 6);
    assert.deepEqual(lines.map((l) => `${l.method} ${l.path} ${l.status}`).sort(), [
      "GET * 400",
      "GET * 400",
      "OPTIONS * 200",
      "OPTIONS * 200",
      "OPTIONS * 200",
      "OPTIONS * 200",
    ]);
    // A path that merely is `/*` still goes upstream.
    const star = await run("curl", ["-sS", "-X", "OPTIONS", `http://127.0.0.1:${plain.port}/*`]);
    assert.equal(star.stdout, "upstream");
    assert.deepEqual(seen, ["OPTIONS /*"]);
  },
);

Deno.test("OPTIONS * over HTTP/3 is answered by Prox too", async () => {
  let reached = 0;
  await using up = await startUpstream(() => {
    reached++;
    return new Response("upstream");
  });
  await using prox = await startProxy(
    `tls: { cert_path: "${TLS}/cert.pem", key_path: "${TLS}/key.pem" }
protocols: { http3_enabled: true }
health_check: { enabled: false }
routes:
  "/": { type: proxy, target: "${up.url}" }
`,
  );
  assert.ok(prox.server.h3, "h3 listener is up");
  await using h3 = await connectH3({
    hostname: "127.0.0.1",
    port: prox.port,
    caCerts: [Deno.readTextFileSync(`${TLS}/ca.pem`)],
  });
  const res = await h3.request("*", { method: "OPTIONS" });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("allow"), "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS");
  assert.equal(res.body.length, 0);
  assert.equal(reached, 0);
});
