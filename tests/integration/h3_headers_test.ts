// HTTP/3 responses through the full proxy carry the headers the TCP path gives the same request:
// a Date, Prox's own Alt-Svc rather than the upstream's, the same upstream path for raw bytes, and
// a 100 Continue for a client that waits for one.
import assert from "node:assert/strict";
import { ROOT, startUpstream, waitFor } from "../_harness.ts";
import { memoryLogger } from "./_acme.ts";
import { startProxy } from "./_proxy.ts";
import { connectH3 } from "../../src/adapters/h3/client.ts";
import { encodeFrame, FrameType } from "../../src/adapters/h3/frames.ts";
import { decodeFieldSection, encodeFieldSection, type Field } from "../../src/adapters/h3/qpack.ts";
import { StreamReader } from "../../src/adapters/h3/stream_reader.ts";

const TLS = `${ROOT}/tests/fixtures/tls`;
const ca = Deno.readTextFileSync(`${TLS}/ca.pem`);

const config = (upstream: string) =>
  `listen_addr: "127.0.0.1:0"
tls:
  cert_path: "${TLS}/cert.pem"
  key_path: "${TLS}/key.pem"
protocols:
  http3_enabled: true
health_check: { enabled: false }
routes:
  "/go":
    type: redirect
    target: "https://example.com/"
  "/":
    type: proxy
    target: "${upstream}"
`;

/** GET `path` over HTTP/2 (TLS) and over HTTP/3; the header sections of both. */
async function bothWays(port: number, path: string): Promise<{ tcp: Headers; h3: Headers }> {
  const client = Deno.createHttpClient({ caCerts: [ca] });
  try {
    const res = await fetch(`https://localhost:${port}${path}`, { client, redirect: "manual" });
    await res.body?.cancel();
    await using h3 = await connectH3({ hostname: "127.0.0.1", port, caCerts: [ca] });
    return { tcp: res.headers, h3: (await h3.request(path)).headers };
  } finally {
    client.close();
  }
}

Deno.test("Prox over HTTP/3 drops an upstream's Alt-Svc; over TCP only its own is sent", async () => {
  // A raw upstream: its Alt-Svc names its own alternative port, meaningless for Prox's origin.
  await using up = await startUpstream(() =>
    new Response("hi", { headers: { "alt-svc": 'h3=":9999"; ma=100' } })
  );
  await using prox = await startProxy(config(up.url), { keepListen: true, tls: true });
  const { tcp, h3 } = await bothWays(prox.port, "/x");
  assert.equal(tcp.get("alt-svc"), `h3=":${prox.port}"; ma=86400`);
  assert.equal(h3.get("alt-svc"), null);
});

Deno.test("Prox over HTTP/3 sends Date on proxied and local responses, as over TCP", async () => {
  // Deno.serve adds Date to the upstream's responses; a raw one without it stands for others.
  const ln = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const serving = (async () => {
    for await (const conn of ln) {
      await conn.read(new Uint8Array(4096));
      await conn.write(new TextEncoder().encode("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi"));
      conn.close();
    }
  })();
  try {
    await using prox = await startProxy(
      config(`http://127.0.0.1:${(ln.addr as Deno.NetAddr).port}`),
      { keepListen: true, tls: true },
    );
    for (const path of ["/x", "/go"]) {
      const { tcp, h3 } = await bothWays(prox.port, path);
      assert.match(tcp.get("date") ?? "", /^\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT$/, path);
      assert.match(h3.get("date") ?? "", /^\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT$/, path);
    }
  } finally {
    ln.close();
    await serving.catch(() => {});
  }
});

Deno.test("Prox over HTTP/3 percent-encodes raw UTF-8 in :path byte by byte, as over HTTP/1.1", async () => {
  const paths: string[] = [];
  await using up = await startUpstream((req) => {
    paths.push(new URL(req.url).pathname + new URL(req.url).search);
    return new Response("ok");
  });
  await using prox = await startProxy(config(up.url), { keepListen: true, tls: true });
  await using h3 = await connectH3({ hostname: "127.0.0.1", port: prox.port, caCerts: [ca] });
  // QPACK carries bytes; "/é" in UTF-8 is the bytes 2f c3 a9 (one char per byte here).
  const res = await h3.request("/\xc3\xa9?q=\xc3\xa9");
  assert.equal(res.status, 200);
  assert.deepEqual(paths, ["/%C3%A9?q=%C3%A9"]);
});

Deno.test("Prox over HTTP/3 answers Expect: 100-continue with an interim 100 before reading the body", async () => {
  await using up = await startUpstream(async (req) => new Response(`got ${await req.text()}`));
  await using prox = await startProxy(config(up.url), { keepListen: true, tls: true });
  const conn = await Deno.connectQuic({
    hostname: "127.0.0.1",
    port: prox.port,
    serverName: "localhost",
    caCerts: [ca],
    alpnProtocols: ["h3"],
  });
  try {
    const s = await conn.createBidirectionalStream();
    const w = s.writable.getWriter();
    await w.write(encodeFrame(
      FrameType.HEADERS,
      encodeFieldSection([
        ...[[":method", "POST"], [":scheme", "https"], [":authority", "localhost"]] as Field[],
        ...[[":path", "/up"], ["content-length", "5"], ["expect", "100-continue"]] as Field[],
      ]),
    ));
    // The client holds the body back until the 100 (over TCP, Deno.serve sends it).
    const r = new StreamReader(s.readable);
    const frame = async () => {
      const type = await r.varint();
      const payload = await r.exact((await r.varint())!);
      return type === FrameType.HEADERS ? decodeFieldSection(payload) : payload;
    };
    let timer: ReturnType<typeof setTimeout> | undefined;
    const first = await Promise.race([
      frame(),
      new Promise<null>((ok) => timer = setTimeout(() => ok(null), 3000)),
    ]);
    clearTimeout(timer);
    assert.deepEqual(first, [[":status", "100"]]);
    await w.write(encodeFrame(FrameType.DATA, new TextEncoder().encode("hello")));
    await w.close();
    assert.equal((await frame() as Field[])[0][1], "200");
    assert.equal(new TextDecoder().decode(await frame() as Uint8Array), "got hello");
    await r.cancel();
  } finally {
    conn.close();
  }
});

Deno.test("Prox over HTTP/3 logs and counts its own refusals (TRACE 405, CONNECT 501, 431) as over TCP", async () => {
  await using up = await startUpstream(() => new Response("hi"));
  const logger = memoryLogger();
  await using prox = await startProxy(
    config(up.url) + "metrics: { on_main_listener: true }\nlog: { access_log: json }\n",
    { keepListen: true, tls: true, logger },
  );
  {
    await using h3 = await connectH3({ hostname: "127.0.0.1", port: prox.port, caCerts: [ca] });
    assert.equal((await h3.request("/x", { method: "TRACE" })).status, 405);
    const connect = await h3.request("/", {
      fields: [[":method", "CONNECT"], [":authority", `localhost:${prox.port}`]],
    });
    assert.equal(connect.status, 501);
    const big = await h3.request("/big", { headers: { "x-big": "a".repeat(128 * 1024) } });
    assert.equal(big.status, 431);
    // Each answer carries the request id that its access line has.
    assert.match(new TextDecoder().decode(big.body), /request id: \S+/);
  }
  const access = () => logger.lines.filter((l) => l.startsWith("info access "));
  await waitFor(() => access().length === 3, { what: "three access lines" });
  const line = (status: number) => access().find((l) => l.includes(`"status":${status}`))!;
  assert.match(line(405), /"method":"TRACE".*"path":"\/x".*"protocol":"h3"/);
  assert.match(line(501), /"method":"CONNECT".*"protocol":"h3"/);
  // A field section too large to be read at all: its method and path are unknown.
  assert.match(line(431), /"method":"-".*"protocol":"h3"/);
  // As over TCP, a 431 is a client fault worth one warning, with its request id.
  assert.match(
    logger.lines.find((l) => l.startsWith("warn Request failed"))!,
    /"requestId":"[^"]+","kind":"header_too_large"/,
  );
  const client = Deno.createHttpClient({ caCerts: [ca] });
  try {
    const text = await (await fetch(`https://localhost:${prox.port}/metrics`, { client })).text();
    for (const [method, status] of [["TRACE", 405], ["CONNECT", 501], ["OTHER", 431]]) {
      assert.match(
        text,
        new RegExp(
          `^prox_requests_total\\{route="\\(none\\)",method="${method}",status="${status}"\\} 1$`,
          "m",
        ),
      );
    }
  } finally {
    client.close();
  }
});
