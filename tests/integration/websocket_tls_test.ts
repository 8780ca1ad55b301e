// WebSockets over TLS on both sides (wss client → Prox HTTPS listener → wss upstream trusted
// through the route's `tls.ca_cert`), the unpausable custom-CA client's cap, unreachable pools,
// and a headless Chromium page talking through Prox.

import assert from "node:assert/strict";
import { chromiumDumpDom, interopTest, ROOT, startUpstream, waitFor } from "../_harness.ts";
import {
  closed,
  connect,
  connectAndWaitClose,
  messages,
  recordingLogger,
  startWsProxy,
  WsClient,
  wsRoute,
  wssUpstream,
  wsUpstream,
} from "./_ws.ts";
import { Buffer } from "node:buffer";

const TLS = `${ROOT}/tests/fixtures/tls`;
const cert = { cert: `${TLS}/cert.pem`, key: `${TLS}/key.pem` };

Deno.test("wss on both sides: custom upstream CA, echo, subprotocol, close codes", async () => {
  const upstreamSaw: number[] = [];
  await using up = await wssUpstream(
    { cert: Deno.readTextFileSync(cert.cert), key: Deno.readTextFileSync(cert.key) },
    (ws) => {
      ws.on("close", (code) => upstreamSaw.push(code));
      ws.on("message", (data, binary) => {
        if (data.toString() === "close please") ws.close(4005, "as asked");
        else ws.send(data, { binary });
      });
    },
    { handleProtocols: (p: Set<string>) => p.has("b") ? "b" : false },
  );
  await using prox = await startWsProxy(
    `
routes:
  "/secure":
    type: websocket
    target: "${up.url}/ws"
    tls: { ca_cert: "${TLS}/ca.pem" }
`,
    { tls: cert },
  );
  const ca = Deno.readTextFileSync(`${TLS}/ca.pem`);
  const url = prox.ws.replace("127.0.0.1", "localhost");
  const ws = await connect(`${url}/secure`, ["a", "b"], { ca });
  assert.equal(ws.protocol, "b");
  const got = messages(ws, 2);
  ws.send("over tls");
  ws.send(new Uint8Array([1, 2, 3]));
  const [t, b] = await got;
  assert.equal(t.data.toString(), "over tls");
  assert.deepEqual([...b.data], [1, 2, 3]);
  assert.equal(b.binary, true);
  ws.send("close please");
  assert.deepEqual(await closed(ws), { code: 4005, reason: "as asked" });

  // Client-initiated close through the custom-CA upstream socket.
  const ws2 = await connect(`${url}/secure`, [], { ca });
  ws2.close(4001, "bye");
  await closed(ws2);
  await waitFor(() => upstreamSaw.includes(4001), { what: "upstream close 4001" });
  assert.equal(up.requests[0].url, "/ws");

  // Without the CA, the upstream's certificate is refused: the client gets 1014.
  await using strict = await startWsProxy(wsRoute(up.url));
  assert.equal((await connectAndWaitClose(`${strict.ws}/`)).code, 1014);
});

Deno.test("wss upstream: tls.insecure_skip_verify and tls.server_name apply to WebSockets", async () => {
  await using up = await wssUpstream({
    cert: Deno.readTextFileSync(cert.cert),
    key: Deno.readTextFileSync(cert.key),
  });
  const ip = up.url.replace("localhost", "127.0.0.1");
  const echoes = async (proxy: { ws: string }) => {
    const ws = await connect(`${proxy.ws}/`);
    const end = closed(ws);
    const got = messages(ws, 1);
    ws.send("through the relay");
    const first = await Promise.race([
      got,
      end.then((c) => Promise.reject(new Error(`closed with ${c.code}`))),
    ]);
    assert.equal(first[0].data.toString(), "through the relay");
    ws.close(1000);
    await end;
  };
  // Unverified: the test CA is not trusted, yet the handshake goes on.
  await using insecure = await startWsProxy(wsRoute(up.url, "tls: { insecure_skip_verify: true }"));
  await echoes(insecure);
  // To the address, verified against the name the certificate holds.
  await using named = await startWsProxy(
    wsRoute(ip, `tls: { ca_cert: "${TLS}/ca.pem", server_name: localhost }`),
  );
  await echoes(named);
  // A name the certificate does not hold is refused as before (1014: bad gateway for WebSockets).
  await using wrong = await startWsProxy(
    wsRoute(ip, `tls: { ca_cert: "${TLS}/ca.pem", server_name: other.test }`),
  );
  assert.equal((await connectAndWaitClose(`${wrong.ws}/`)).code, 1014);
});

Deno.test("wss upstream through the relay: the log says why the upstream failed, not the relay's socket", async () => {
  await using up = await wssUpstream({
    cert: Deno.readTextFileSync(cert.cert),
    key: Deno.readTextFileSync(cert.key),
  });
  const ip = up.url.replace("localhost", "127.0.0.1");
  // A port nobody listens on: bound and closed again.
  const gone = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (gone.addr as Deno.NetAddr).port;
  gone.close();
  const cases: [string, string, RegExp][] = [
    [ip, `tls: { ca_cert: "${TLS}/ca.pem", server_name: other.test }`, /certificate/i],
    [`wss://127.0.0.1:${port}`, "tls: { insecure_skip_verify: true }", /refused/i],
  ];
  for (const [target, tls, why] of cases) {
    const logger = recordingLogger();
    await using proxy = await startWsProxy(wsRoute(target, tls), { logger });
    assert.equal((await connectAndWaitClose(`${proxy.ws}/`)).code, 1014);
    const line = logger.records.find((r) => r.msg === "WebSocket upstream unreachable");
    assert.ok(line, "a warning line");
    const error = String(line.error);
    assert.match(error, why);
    assert.doesNotMatch(error, /No such file|os error 2/);
    assert.match(error, new RegExp(`^Cannot connect to upstream "${target}"`));
  }
});

const PAGE = `<!doctype html><title>ws</title><body><p id="out">pending</p><script>
const out = document.getElementById("out");
const ws = new WebSocket("ws://" + location.host + "/live/feed", ["chat.v1"]);
ws.binaryType = "arraybuffer";
ws.onopen = () => { ws.send("hello from chromium"); ws.send(new Uint8Array([9, 8, 7])); };
const got = [];
ws.onmessage = (e) => {
  got.push(typeof e.data === "string" ? e.data : "bytes:" + new Uint8Array(e.data).join(","));
  if (got.length === 2) ws.close(4000, "page done");
};
ws.onclose = (e) => { out.textContent = "done " + ws.protocol + " " + got.join("|") + " " + e.code; };
ws.onerror = () => { out.textContent = "error"; };
</script><script src="/wait.js"></script></body>`;

interopTest(
  "headless Chromium opens a WebSocket through Prox from a page",
  ["chromium"],
  async () => {
    const upstreamSaw: string[] = [];
    await using up = await wsUpstream((ws) => {
      ws.on("message", (data, binary) => {
        upstreamSaw.push(binary ? "binary" : data.toString());
        ws.send(data, { binary });
      });
      ws.on("close", (code, reason) => upstreamSaw.push(`close ${code} ${reason}`));
    }, { handleProtocols: (p: Set<string>) => p.has("chat.v1") ? "chat.v1" : false });
    // /wait.js blocks the page's load (and so --dump-dom) until the WebSocket has closed.
    await using page = await startUpstream(async (req) => {
      if (new URL(req.url).pathname !== "/wait.js") {
        return new Response(PAGE, { headers: { "content-type": "text/html; charset=utf-8" } });
      }
      const done = () => upstreamSaw.some((s) => s.startsWith("close"));
      await waitFor(done, { timeoutMs: 20_000 }).catch(() => {});
      await new Promise((r) => setTimeout(r, 200)); // the page's onclose runs
      return new Response("", { headers: { "content-type": "text/javascript" } });
    });
    await using prox = await startWsProxy(`
routes:
  "/":
    type: proxy
    target: "${page.url}"
  "/live":
    type: websocket
    target: "${up.url}"
`);
    const out = await chromiumDumpDom(`${prox.http}/`);
    assert.equal(out.code, 0, out.stderr.slice(-2000));
    assert.match(
      out.stdout,
      /<p id="out">done chat\.v1 hello from chromium\|bytes:9,8,7 4000<\/p>/,
    );
    await waitFor(() => upstreamSaw.includes("close 4000 page done"));
    assert.deepEqual(upstreamSaw, ["hello from chromium", "binary", "close 4000 page done"]);
  },
);

Deno.test("custom-CA upstream cannot be paused: a client that stops reading gets 1013", async () => {
  let upstream: WsClient | undefined;
  await using up = await wssUpstream(
    { cert: Deno.readTextFileSync(cert.cert), key: Deno.readTextFileSync(cert.key) },
    (ws) => upstream = ws,
  );
  const logger = recordingLogger();
  await using prox = await startWsProxy(
    wsRoute(up.url, `tls: { ca_cert: "${TLS}/ca.pem" }`),
    { logger },
  );
  const ws = await connect(`${prox.ws}/`);
  const c = closed(ws);
  ws.pause();
  await waitFor(() => upstream);
  const chunk = Buffer.alloc(1 << 20, 3);
  for (let i = 0; i < 64; i++) upstream!.send(chunk);
  const rec = await waitFor(() => logger.records.find((r) => r.msg === "WebSocket closed by Prox"));
  assert.equal(rec.code, 1013);
  assert.equal(rec.reason, "Client is not reading fast enough");
  // Its close waits behind the 16 MiB it did not read: the client is let go of 5 s later, not
  // given the time those take at 64 KiB/s (4 min) as a client still reading would be.
  const end = await waitFor(
    () => logger.records.find((r) => r.msg === "WebSocket closed"),
    { timeoutMs: 15_000, what: "the connection dropped" },
  );
  assert.equal(end.code, 1013);
  ws.terminate();
  await c;
});

Deno.test("load_balance with every target unreachable closes the client with 1014", async () => {
  const dead = () => {
    const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (l.addr as Deno.NetAddr).port;
    l.close();
    return `http://127.0.0.1:${port}`;
  };
  await using prox = await startWsProxy(`
routes:
  "/":
    type: load_balance
    targets: ["${dead()}", "${dead()}"]
`);
  assert.deepEqual(await connectAndWaitClose(`${prox.ws}/`), { code: 1014, reason: "Bad gateway" });
});
