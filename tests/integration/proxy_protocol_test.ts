// `proxy_protocol: v1 | v2` on proxy and load_balance routes: the PROXY header goes first on each
// upstream connection with the client's address (nginx `listen … proxy_protocol` reads it), one
// connection per request, and health probes send v1 UNKNOWN / v2 LOCAL.
import assert from "node:assert/strict";
import { interopTest, ROOT, waitFor } from "../_harness.ts";
import { rawServer, readRequest, write } from "../_upstream_peers.ts";
import { startNginx } from "./_nginx.ts";
import { startProxy } from "./_proxy.ts";
import { closed, connect, messages, wsUpstream } from "./_ws.ts";

const dec = new TextDecoder();

/** Sends raw HTTP/1.1 requests on one connection; returns the bodies and the client's port. */
async function onOneConnection(port: number, paths: string[], extra = "") {
  const c = await Deno.connect({ hostname: "127.0.0.1", port });
  const bodies: string[] = [];
  try {
    const buf = new Uint8Array(8192);
    for (const path of paths) {
      await write(c, `GET ${path} HTTP/1.1\r\nHost: a.test\r\n${extra}\r\n`);
      let text = "";
      for (;;) {
        const head = text.indexOf("\r\n\r\n");
        const len = /content-length: (\d+)/i.exec(text)?.[1];
        if (head >= 0 && len !== undefined && text.length >= head + 4 + Number(len)) {
          bodies.push(text.slice(head + 4));
          break;
        }
        const n = await c.read(buf);
        if (n === null) throw new Error(`closed: ${text}`);
        text += dec.decode(buf.subarray(0, n));
      }
    }
    return { bodies, clientPort: (c.localAddr as Deno.NetAddr).port };
  } finally {
    c.close();
  }
}

interopTest(
  "proxy_protocol: nginx sees the client's address over v1 and v2, and the probes' LOCAL/UNKNOWN",
  [
    "nginx",
  ],
  async () => {
    const tls = `${ROOT}/tests/fixtures/tls`;
    await using ngx = await startNginx(
      `access_log access.log pp;
    location = /health { return 200 "ok\\n"; }
    location / { return 200 "$proxy_protocol_addr $proxy_protocol_port $connection\\n"; }`,
      {
        listen: "proxy_protocol",
        http: "log_format pp '$proxy_protocol_addr|$request_uri|$status';",
        more: (port) =>
          `server {
    listen 127.0.0.1:${port + 1} ssl proxy_protocol;
    ssl_certificate ${tls}/cert.pem; ssl_certificate_key ${tls}/key.pem;
    location / { return 200 "tls $proxy_protocol_addr $proxy_protocol_port\\n"; }
  }`,
      },
    );
    const tlsUrl = ngx.url.replace(/^http:(.*):(\d+)$/, (_, h, p) => `https:${h}:${Number(p) + 1}`);
    await using prox = await startProxy(`
trusted_proxies: ["127.0.0.1/32"]
health_check: { path: /health, interval_secs: 60 }
routes:
  /v1: { type: proxy, target: "${ngx.url}", proxy_protocol: v1 }
  /v2: { type: load_balance, targets: ["${ngx.url}"], proxy_protocol: v2 }
  /tls:
    type: proxy
    target: "${tlsUrl}"
    proxy_protocol: v2
    tls: { ca_cert: "${tls}/ca.pem" }
    health_check: { enabled: false }
`);
    for (const v of ["v1", "v2"]) {
      // Two requests on one client connection: each on its own upstream connection.
      const { bodies, clientPort } = await onOneConnection(prox.port, [`/${v}/a`, `/${v}/b`]);
      const [a, b] = bodies.map((t) => t.trim().split(" "));
      assert.deepEqual(a.slice(0, 2), ["127.0.0.1", String(clientPort)], v);
      assert.deepEqual(b.slice(0, 2), ["127.0.0.1", String(clientPort)], v);
      assert.notEqual(a[2], b[2], `${v}: a new upstream connection per request`);
      // Behind a trusted proxy: the address it forwarded for (its port unknown: 0).
      const fwd = await onOneConnection(prox.port, [`/${v}/c`], "X-Forwarded-For: 203.0.113.9\r\n");
      assert.deepEqual(fwd.bodies[0].trim().split(" ").slice(0, 2), ["203.0.113.9", ""], v); // nginx shows port 0 as empty
    }
    // Before TLS: nginx reads the header, then the handshake.
    const res = await fetch(`${prox.url}/tls/x`);
    assert.match(await res.text(), /^tls 127\.0\.0\.1 \d+\n$/);
    // The probes (one per route: the header is part of the check) were accepted without an address.
    const log = await waitFor(async () => {
      const lines = (await Deno.readTextFile(`${ngx.dir}/access.log`)).split("\n");
      const probes = lines.filter((l) => l.endsWith("|/health|200"));
      return probes.length >= 2 ? probes : null;
    }, { what: "two health probes in nginx's log" });
    for (const line of log) assert.match(line, /^-?\|/, line);
    assert.doesNotMatch(await Deno.readTextFile(`${ngx.dir}/error.log`), /broken header/);
  },
);

Deno.test("proxy_protocol v2: the exact bytes first on the connection, LOCAL for a probe", async () => {
  const heads: Uint8Array[] = [];
  await using up = rawServer(async (c) => {
    const head = new Uint8Array(64);
    let got = 0;
    // 16 bytes of fixed header, then its length.
    while (got < 16 || got < 16 + ((head[14] << 8) | head[15])) {
      const n = await c.read(head.subarray(got));
      if (n === null) return;
      got += n;
    }
    heads.push(head.slice(0, 16 + ((head[14] << 8) | head[15])));
    // A second request on this connection would be answered "no": it must not come.
    for (const body of ["ok", "no"]) {
      if (await readRequest(c) === null) return;
      await write(c, `HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n${body}`);
    }
  });
  await using prox = await startProxy(`
health_check: { path: /health, interval_secs: 60 }
routes: { /: { type: proxy, target: "${up.url}", proxy_protocol: v2 } }
`);
  const probe = await waitFor(() => heads[0], { what: "the health probe" });
  const hex = (b: Uint8Array) => [...b].map((x) => x.toString(16).padStart(2, "0")).join(" ");
  const SIG = "0d 0a 0d 0a 00 0d 0a 51 55 49 54 0a";
  assert.equal(hex(probe), `${SIG} 20 00 00 00`);
  const { bodies, clientPort } = await onOneConnection(prox.port, ["/a", "/b"]);
  assert.deepEqual(bodies, ["ok", "ok"]);
  const port = (n: number) =>
    `${(n >> 8).toString(16).padStart(2, "0")} ${(n & 0xff).toString(16).padStart(2, "0")}`;
  const expected = `${SIG} 21 11 00 0c 7f 00 00 01 00 00 00 00 ${port(clientPort)} ${
    port(prox.port)
  }`;
  assert.deepEqual(heads.slice(1).map(hex), [expected, expected]);
});

interopTest(
  "proxy_protocol: a WebSocket upgrade reaches nginx with the header too, over ws and wss",
  [
    "nginx",
  ],
  async () => {
    const tls = `${ROOT}/tests/fixtures/tls`;
    await using app = await wsUpstream();
    // nginx passes the address it read, and the request target it got, on to the WebSocket app.
    const pass = `proxy_pass http://127.0.0.1:${app.port};
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection "upgrade";
      proxy_set_header X-PP "$proxy_protocol_addr:$proxy_protocol_port";
      proxy_set_header X-URI $request_uri;`;
    await using ngx = await startNginx(`location / { ${pass} }`, {
      listen: "proxy_protocol",
      more: (port) =>
        `server {
    listen 127.0.0.1:${port + 1} ssl proxy_protocol;
    ssl_certificate ${tls}/cert.pem; ssl_certificate_key ${tls}/key.pem;
    location / { ${pass} }
  }`,
    });
    const tlsUrl = ngx.url.replace(/^http:(.*):(\d+)$/, (_, h, p) => `https:${h}:${Number(p) + 1}`);
    await using prox = await startProxy(`
trusted_proxies: ["127.0.0.1/32"]
health_check: { enabled: false }
routes:
  /ws: { type: proxy, target: "${ngx.url}", proxy_protocol: v1 }
  /wss:
    type: load_balance
    targets: ["${tlsUrl}"]
    proxy_protocol: v2
    tls: { ca_cert: "${tls}/ca.pem" }
`);
    for (
      const [path, fwd] of [["/ws/chat?x=1", "203.0.113.9"], ["/wss/chat?y=2", "198.51.100.4"]]
    ) {
      const ws = await connect(`ws://127.0.0.1:${prox.port}${path}`, [], {
        headers: { "x-forwarded-for": fwd },
      });
      const got = messages(ws, 1);
      // Without the header nginx drops the connection and Prox closes the client with 1014.
      const ended = closed(ws).then((c) => Promise.reject(new Error(`${path}: closed ${c.code}`)));
      ended.catch(() => {});
      ws.send("hello");
      assert.equal((await Promise.race([got, ended]))[0].data.toString(), "hello");
      const req = app.requests.at(-1)!;
      assert.equal(req.headers["x-pp"], `${fwd}:`, path); // nginx shows port 0 as empty
      assert.equal(req.headers["x-uri"], `/chat${path.slice(path.indexOf("?"))}`, path);
      const done = closed(ws);
      ws.close();
      await done;
    }
    await waitFor(() => app.sockets.size === 0, { what: "the upstream sockets closed" });
  },
);
