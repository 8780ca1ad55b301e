// HTTP/2 over TLS to upstreams with the route's `tls` options: a node:http2 upstream (h2 and
// HTTP/1.1 by ALPN) on 127.0.0.1 with a certificate for `other.test` only, reached with
// `upstream_protocol: h2` and by ALPN alone. It says which HTTP version and which SNI name it saw,
// so a route that fell back to HTTP/1.1, sent no name or shared a connection made for another
// route's name shows.
import assert from "node:assert/strict";
import { interopTest, ROOT } from "../_harness.ts";
import { startProxy } from "./_proxy.ts";
import { nodeServer } from "./_node.ts";

const TLS = `${ROOT}/tests/fixtures/tls`;

/**
 * node:http2 with `other.pem` (other.test, *.other.test), HTTP/1.1 too unless `h2Only` (as gRPC
 * servers are); answers what it saw.
 */
async function otherTestUpstream(h2Only = false) {
  const script = `
    const http2 = require("node:http2");
    const fs = require("node:fs");
    const server = http2.createSecureServer({
      cert: fs.readFileSync(${JSON.stringify(`${TLS}/other.pem`)}),
      key: fs.readFileSync(${JSON.stringify(`${TLS}/other.key`)}),
      allowHTTP1: ${!h2Only},
    }, (req, res) => {
      const sock = req.stream ? req.stream.session.socket : req.socket;
      res.setHeader("content-type", "application/json");
      res.end(JSON.stringify({ version: req.httpVersion, sni: sock.servername || null }));
    });
    server.listen(0, "127.0.0.1", () => console.log(server.address().port));
  `;
  const node = await nodeServer(script);
  return { port: Number(node.line), [Symbol.asyncDispose]: () => node[Symbol.asyncDispose]() };
}

/** A config with one route per entry: path → the route's extra keys (indented by four). */
function config(port: number, routes: Record<string, string>): string {
  let out = "health_check: { enabled: false }\nroutes:\n";
  for (const [path, extra] of Object.entries(routes)) {
    out += `  ${path}:\n    type: proxy\n    target: "https://127.0.0.1:${port}"\n${extra}`;
  }
  return out;
}

/** `version sni` as the upstream saw them, or the status when it is not 200. */
async function get(url: string): Promise<string | number> {
  const res = await fetch(url);
  if (res.status !== 200) {
    await res.body?.cancel();
    return res.status;
  }
  const body = await res.json();
  return `${body.version} ${body.sni}`;
}

const CA = `ca_cert: "${TLS}/ca.pem"`;

for (const protocol of ["h2", "ALPN"]) {
  const proto = protocol === "h2" ? "    upstream_protocol: h2\n" : "";
  const label = protocol === "h2" ? "upstream_protocol: h2" : "h2 by ALPN";

  interopTest(`${label}: tls.server_name is sent and verified over HTTP/2`, [
    "node",
  ], async () => {
    await using up = await otherTestUpstream();
    await using prox = await startProxy(config(up.port, {
      "/good": `${proto}    tls: { ${CA}, server_name: api.other.test }\n`,
      // The same host:port, another name: its own connections, and the certificate fails it.
      "/bad": `${proto}    tls: { ${CA}, server_name: wrong.test }\n`,
    }));
    assert.equal(await get(`${prox.url}/bad`), 502);
    assert.equal(await get(`${prox.url}/good`), "2.0 api.other.test");
    assert.equal(await get(`${prox.url}/bad`), 502);
    assert.equal(await get(`${prox.url}/good`), "2.0 api.other.test");
  });

  interopTest(`${label}: tls.insecure_skip_verify over HTTP/2; verification is strict without`, [
    "node",
  ], async () => {
    await using up = await otherTestUpstream();
    await using prox = await startProxy(config(up.port, {
      "/skip": `${proto}    tls: { insecure_skip_verify: true, server_name: x.other.test }\n`,
      "/skipnoname": `${proto}    tls: { insecure_skip_verify: true }\n`,
      // The CA vouches for the certificate, but it does not name 127.0.0.1.
      "/ca": `${proto}    tls: { ${CA} }\n`,
      // No CA: the system roots do not know the test CA.
      "/strict": `${proto}    tls: { server_name: api.other.test }\n`,
      "/none": proto,
    }));
    assert.equal(await get(`${prox.url}/skip`), "2.0 x.other.test");
    // No SNI for an IP address (RFC 6066 §3).
    assert.equal(await get(`${prox.url}/skipnoname`), "2.0 null");
    assert.equal(await get(`${prox.url}/ca`), 502);
    assert.equal(await get(`${prox.url}/strict`), 502);
    assert.equal(await get(`${prox.url}/none`), 502);
  });
}

interopTest(
  "h2 by ALPN: an upstream that speaks only HTTP/2 (a gRPC server) with tls.server_name",
  [
    "node",
  ],
  async () => {
    // Sent over HTTP/1.1, such a route failed every request: the upstream offers no http/1.1.
    await using up = await otherTestUpstream(true);
    await using prox = await startProxy(config(up.port, {
      "/": `    tls: { ${CA}, server_name: grpc.other.test }\n`,
    }));
    assert.equal(await get(`${prox.url}/`), "2.0 grpc.other.test");
  },
);
