// HTTP/3 through the full proxy to a real upstream: the in-repo client, ngtcp2's gtlsclient and
// headless Chromium (forced QUIC and real Alt-Svc discovery from the TCP listener).
import assert from "node:assert/strict";
import { chromiumDumpDom, interopTest, ROOT, run, startUpstream, waitFor } from "../_harness.ts";
import { startProxy } from "./_proxy.ts";
import { connectH3 } from "../../src/adapters/h3/client.ts";
import { startServer } from "../../src/server.ts";
import { silentLogger } from "../../src/ports.ts";

const TLS = `${ROOT}/tests/fixtures/tls`;
const ca = Deno.readTextFileSync(`${TLS}/ca.pem`);
const spki = Deno.readTextFileSync(`${TLS}/spki.txt`).trim();
const MiB = 1024 * 1024;

/** 1 MiB of fixed pseudo-random bytes, repeated for big bodies. */
const block = (() => {
  const b = new Uint8Array(MiB);
  let x = 2463534242;
  for (let i = 0; i < b.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
  }
  return b;
})();

const PAGE = `<!doctype html><html><head><link rel="stylesheet" href="/style.css"></head>
<body><pre id="out">loading</pre><script src="/app.js"></script></body></html>`;
const APP = `
async function main() {
  const rows = [];
  for (let i = 0; i < 6; i++) {
    const r = await fetch("/api?i=" + i, { cache: "no-store" });
    await r.text();
    await new Promise((ok) => setTimeout(ok, 200));
  }
  for (const e of performance.getEntries()) {
    if (e.nextHopProtocol !== undefined) rows.push(new URL(e.name).pathname + new URL(e.name).search + "=" + e.nextHopProtocol);
  }
  document.getElementById("out").textContent = "RESULT " + rows.join(" ");
}
main();
`;

async function sha256(b: Uint8Array<ArrayBuffer>): Promise<string> {
  return Array.from(
    new Uint8Array(await crypto.subtle.digest("SHA-256", b)),
    (x) => x.toString(16).padStart(2, "0"),
  ).join("");
}

function upstreamHandler(req: Request): Response | Promise<Response> {
  const url = new URL(req.url);
  switch (url.pathname) {
    case "/":
      return new Response(PAGE, { headers: { "content-type": "text/html; charset=utf-8" } });
    case "/style.css":
      return new Response("body { color: #333 }", { headers: { "content-type": "text/css" } });
    case "/app.js":
      return new Response(APP, { headers: { "content-type": "application/javascript" } });
    case "/echo":
      return req.arrayBuffer().then(async (b) => {
        const body = new Uint8Array(b);
        return new Response(`${body.length} ${await sha256(body)}`);
      });
    case "/big": {
      const n = Number(url.searchParams.get("mb") ?? "50");
      let i = 0;
      return new Response(
        new ReadableStream({
          pull(c) {
            if (i++ < n) c.enqueue(block.slice());
            else c.close();
          },
        }),
        {
          headers: {
            "content-length": String(n * MiB),
            "content-type": "application/octet-stream",
          },
        },
      );
    }
    default:
      return new Response(`api ${url.search} via ${req.headers.get("x-forwarded-proto")}`);
  }
}

function config(upstream: string): string {
  return `listen_addr: "127.0.0.1:0"
tls:
  cert_path: "${TLS}/cert.pem"
  key_path: "${TLS}/key.pem"
protocols:
  http3_enabled: true
  http3_config: { max_idle_timeout: 10000, max_streams_bidi: 100 }
health_check: { enabled: false }
routes:
  "/":
    type: proxy
    target: "${upstream}"
`;
}

Deno.test("Prox serves HTTP/3 on the TLS port and advertises it with Alt-Svc on TCP only", async () => {
  await using up = await startUpstream(upstreamHandler);
  await using prox = await startProxy(config(up.url), { keepListen: true, tls: true });
  assert.ok(prox.server.h3, "h3 listener is up");
  assert.equal(prox.server.h3.port, prox.port);
  const client = Deno.createHttpClient({ caCerts: [ca] });
  try {
    const res = await fetch(`https://localhost:${prox.port}/api?x=1`, { client });
    assert.equal(await res.text(), "api ?x=1 via https");
    assert.equal(res.headers.get("alt-svc"), `h3=":${prox.port}"; ma=86400`);
  } finally {
    client.close();
  }
  await using h3 = await connectH3({ hostname: "127.0.0.1", port: prox.port, caCerts: [ca] });
  const res = await h3.request("/api?y=2");
  assert.equal(res.status, 200);
  assert.equal(new TextDecoder().decode(res.body), "api ?y=2 via https");
  assert.equal(res.headers.get("alt-svc"), null);
  const body = block.subarray(0, MiB);
  const post = await h3.request("/echo", {
    method: "POST",
    body,
    headers: { "content-length": String(MiB) },
  });
  assert.equal(new TextDecoder().decode(post.body), `${MiB} ${await sha256(body)}`);
});

interopTest(
  "gtlsclient GET, 1 MB POST and 50 MiB download through Prox over h3",
  ["gtlsclient"],
  async () => {
    await using up = await startUpstream(upstreamHandler);
    await using prox = await startProxy(config(up.url), { keepListen: true, tls: true });
    const dir = await Deno.makeTempDir();
    try {
      const base = `https://localhost:${prox.port}`;
      const gtls = (...args: string[]) =>
        run("gtlsclient", [
          "--no-quic-dump",
          "--exit-on-all-streams-close",
          "--timeout=10s",
          ...args,
        ], {
          timeoutMs: 60_000,
        });
      const get = await gtls(`--download=${dir}`, "127.0.0.1", String(prox.port), `${base}/api`);
      assert.match(get.stdout + get.stderr, /Negotiated ALPN is h3/);
      assert.match(get.stdout + get.stderr, /\[:status: 200\]/);
      assert.equal(await Deno.readTextFile(`${dir}/api`), "api  via https");

      await Deno.writeFile(`${dir}/post.bin`, block.subarray(0, 1_000_000));
      const post = await gtls(
        ...["-m", "POST", "-d", `${dir}/post.bin`, `--download=${dir}`],
        ...["127.0.0.1", String(prox.port), `${base}/echo`],
      );
      assert.match(post.stdout + post.stderr, /\[:status: 200\]/);
      const want = `1000000 ${await sha256(block.slice(0, 1_000_000))}`;
      assert.equal(await Deno.readTextFile(`${dir}/echo`), want);

      const t0 = performance.now();
      await gtls(
        "--no-http-dump",
        `--download=${dir}`,
        "127.0.0.1",
        String(prox.port),
        `${base}/big`,
      );
      const secs = (performance.now() - t0) / 1000;
      const got = await Deno.readFile(`${dir}/big`);
      assert.equal(got.length, 50 * MiB);
      for (let i = 0; i < 50; i++) {
        assert.ok(
          got.subarray(i * MiB, (i + 1) * MiB).every((b, j) => b === block[j]),
          `MiB ${i} intact`,
        );
      }
      // deno-lint-ignore no-console
      console.log(
        `gtlsclient 50 MiB through Prox over h3: ${secs.toFixed(2)} s (${
          (50 / secs).toFixed(1)
        } MiB/s)`,
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

async function chromium(url: string, extra: string[]): Promise<string> {
  const out = await chromiumDumpDom(url, {
    budgetMs: 10_000,
    extra: [
      "--enable-quic",
      `--ignore-certificate-errors-spki-list=${spki}`,
      "--host-resolver-rules=MAP localhost 127.0.0.1, MAP * ~NOTFOUND",
      ...extra,
    ],
  });
  return out.stdout;
}

interopTest(
  "Chromium loads a page and its subresources through Prox over forced h3",
  ["chromium"],
  async () => {
    await using up = await startUpstream(upstreamHandler);
    await using prox = await startProxy(config(up.url), { keepListen: true, tls: true });
    const dom = await chromium(`https://localhost:${prox.port}/`, [
      `--origin-to-force-quic-on=localhost:${prox.port}`,
    ]);
    const result = dom.match(/RESULT ([^<]*)/)?.[1] ?? "";
    assert.match(result, /\/=h3/, dom);
    assert.match(result, /\/style\.css=h3/, dom);
    assert.match(result, /\/app\.js=h3/, dom);
    assert.match(result, /\/api\?i=5=h3/, dom);
    assert.doesNotMatch(result, /=(h2|http\/1\.1)/, dom);
  },
);

interopTest(
  "Chromium discovers HTTP/3 through Alt-Svc from the TCP listener",
  ["chromium"],
  async () => {
    await using up = await startUpstream(upstreamHandler);
    await using prox = await startProxy(config(up.url), { keepListen: true, tls: true });
    // A dummy forced origin lets Chromium accept our private certificate for alternative services.
    const dom = await chromium(`https://localhost:${prox.port}/`, [
      "--origin-to-force-quic-on=localhost:1",
    ]);
    const result = dom.match(/RESULT ([^<]*)/)?.[1] ?? "";
    assert.match(result, /\/=h2/, dom); // the first request goes over TCP
    assert.match(result, /\/api\?i=5=h3/, dom); // later ones switched to HTTP/3
  },
);

Deno.test("Prox shutdown stops advertising h3, sends GOAWAY and finishes the in-flight h3 request", async () => {
  let release!: () => void;
  const gate = new Promise<void>((r) => release = r);
  let started = false;
  await using up = await startUpstream(async () => {
    started = true;
    await gate;
    return new Response("slow done");
  });
  const prox = await startProxy(config(up.url), { keepListen: true, tls: true });
  await using h3 = await connectH3({ hostname: "127.0.0.1", port: prox.port, caCerts: [ca] });
  const inflight = h3.request("/slow");
  await waitFor(() => started, { what: "request upstream" });
  const down = prox.server.shutdown();
  await waitFor(() => h3.goawayId !== null, { what: "GOAWAY" });
  assert.equal(prox.server.snapshot().altSvc, null);
  release();
  const res = await inflight;
  assert.equal(res.status, 200);
  assert.equal(new TextDecoder().decode(res.body), "slow done");
  h3.close();
  await down;
});

interopTest(
  "gtlsclient resumes with a 0-RTT request and Prox serves it",
  ["gtlsclient"],
  async () => {
    await using up = await startUpstream(upstreamHandler);
    await using prox = await startProxy(config(up.url), { keepListen: true, tls: true });
    const dir = await Deno.makeTempDir();
    try {
      const gtls = (path: string) =>
        run("gtlsclient", [
          ...[
            "--no-quic-dump",
            "--exit-on-all-streams-close",
            "--timeout=10s",
            `--download=${dir}`,
          ],
          ...[`--session-file=${dir}/session`, `--tp-file=${dir}/tp`],
          ...["127.0.0.1", String(prox.port), `https://localhost:${prox.port}${path}`],
        ], { timeoutMs: 30_000 });
      const first = await gtls("/first");
      assert.match(first.stdout + first.stderr, /\[:status: 200\]/);
      const second = await gtls("/second");
      // the request went out in 0-RTT packets and was answered (after the handshake completed)
      assert.match(second.stdout + second.stderr, /0RTT STREAM\(0x0b\) id=0x0 fin=1/);
      assert.match(second.stdout + second.stderr, /\[:status: 200\]/);
      assert.equal(await Deno.readTextFile(`${dir}/second`), "api  via https");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

interopTest("Prox reload with a new certificate swaps it on HTTP/3 too", ["openssl"], async () => {
  await using up = await startUpstream(upstreamHandler);
  const dir = await Deno.makeTempDir();
  try {
    const made = await run("openssl", [
      ...["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"],
      ...[
        "-keyout",
        `${dir}/key2.pem`,
        "-out",
        `${dir}/cert2.pem`,
        "-days",
        "2",
        "-subj",
        "/CN=localhost",
      ],
      ...[
        "-addext",
        "subjectAltName=DNS:localhost",
        "-addext",
        "basicConstraints=critical,CA:FALSE",
      ],
    ]);
    assert.equal(made.code, 0, made.stderr);
    await Deno.copyFile(`${TLS}/cert.pem`, `${dir}/cert.pem`);
    await Deno.copyFile(`${TLS}/key.pem`, `${dir}/key.pem`);
    const yaml = config(up.url).replaceAll(`${TLS}/cert.pem`, `${dir}/cert.pem`)
      .replaceAll(`${TLS}/key.pem`, `${dir}/key.pem`);
    await Deno.writeTextFile(`${dir}/prox.yaml`, yaml);
    const server = await startServer({ path: `${dir}/prox.yaml` }, { logger: silentLogger });
    try {
      const cert2 = await Deno.readTextFile(`${dir}/cert2.pem`);
      await using before = await connectH3({
        hostname: "127.0.0.1",
        port: server.port,
        caCerts: [ca],
      });
      assert.equal((await before.request("/api")).status, 200);
      await Deno.copyFile(`${dir}/cert2.pem`, `${dir}/cert.pem`);
      await Deno.copyFile(`${dir}/key2.pem`, `${dir}/key.pem`);
      assert.equal((await server.reload()).ok, true);
      await using after = await connectH3({
        hostname: "127.0.0.1",
        port: server.port,
        caCerts: [cert2],
      });
      assert.equal((await after.request("/api")).status, 200);
      assert.equal(server.h3?.port, server.port);
      // the connection made before the swap keeps working
      assert.equal((await before.request("/api")).status, 200);
    } finally {
      await server.shutdown();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** A UDP socket on 127.0.0.1 whose port number is free on TCP too (a client's local port may not be). */
function udpWithFreeTcpTwin(): Deno.DatagramConn {
  for (let attempt = 0;; attempt++) {
    const udp = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
    try {
      Deno.listen({ hostname: "127.0.0.1", port: (udp.addr as Deno.NetAddr).port }).close();
      return udp;
    } catch (err) {
      udp.close();
      if (attempt >= 20 || !(err instanceof Deno.errors.AddrInUse)) throw err;
    }
  }
}

Deno.test("Prox keeps serving TCP without Alt-Svc when the UDP port is taken", async () => {
  await using up = await startUpstream(upstreamHandler);
  const udp = udpWithFreeTcpTwin();
  try {
    const port = (udp.addr as Deno.NetAddr).port;
    const yaml = config(up.url).replace(
      `listen_addr: "127.0.0.1:0"`,
      `listen_addr: "127.0.0.1:${port}"`,
    );
    await using prox = await startProxy(yaml, { keepListen: true, tls: true });
    assert.equal(prox.server.h3, null);
    const client = Deno.createHttpClient({ caCerts: [ca] });
    try {
      const res = await fetch(`https://localhost:${port}/api`, { client });
      assert.equal(await res.text(), "api  via https");
      assert.equal(res.headers.get("alt-svc"), null);
    } finally {
      client.close();
    }
  } finally {
    udp.close();
  }
});

Deno.test("admin /status lists the HTTP/3 listener while it is up", async () => {
  await using up = await startUpstream(upstreamHandler);
  const yaml = `${config(up.url)}admin: { listen_addr: "127.0.0.1:0", token: "t0ken" }\n`;
  await using prox = await startProxy(yaml, { keepListen: true, tls: true });
  const res = await fetch(`http://127.0.0.1:${prox.server.admin!.port}/status`, {
    headers: { authorization: "Bearer t0ken" },
  });
  const status = await res.json();
  const names = status.listeners.map((l: { name: string; addr: string }) => `${l.name} ${l.addr}`);
  assert.ok(names.includes(`http3 (udp) 127.0.0.1:${prox.port}`), names.join(", "));
});

Deno.test("HTTP/3: an upload that ends short of its content-length after a pause is the client's 400, not 499", async () => {
  let got = 0;
  const seen: string[] = [];
  await using up = await startUpstream(async (req) => {
    try {
      for await (const chunk of req.body!) got += chunk.byteLength;
      seen.push("complete");
    } catch {
      seen.push("aborted");
    }
    return new Response("ok");
  });
  const lines: Record<string, unknown>[] = [];
  const logger = {
    ...silentLogger,
    info: (m: string, f?: Record<string, unknown>) => m === "access" && lines.push(f!),
  };
  await using prox = await startProxy(config(up.url), { keepListen: true, tls: true, logger });
  await using h3 = await connectH3({ hostname: "127.0.0.1", port: prox.port, caCerts: [ca] });
  // Streamed on to the upstream (past the size read whole); once it has arrived there, a pause
  // of some ticks, after which the upstream exchange watches the client's signal (a 25 ms
  // ticker); then FIN with half the declared bytes.
  let sent = 0;
  const body = new ReadableStream<Uint8Array>({
    async pull(c) {
      if (sent === 0) {
        sent = 100_000;
        return c.enqueue(new Uint8Array(sent));
      }
      await waitFor(() => got === sent, { what: "the first half upstream" });
      await new Promise((r) => setTimeout(r, 150));
      c.close();
    },
  });
  const res = await h3.request("/up", {
    method: "POST",
    headers: { "content-length": "200000" },
    body,
  });
  assert.equal(res.status, 400);
  await waitFor(() => lines.length === 1 && seen.length === 1, { what: "access line, upstream" });
  assert.equal(lines[0].status, 400);
  assert.deepEqual(seen, ["aborted"]);
});

Deno.test("HTTP/3: an upstream's early answer to an upload it does not read arrives whole", async () => {
  // Over HTTP/2 (fetch) and HTTP/1.1: each stops sending the upload once the answer came.
  const early = () => new Response("too large, says the upstream", { status: 413 });
  await using h1 = await startUpstream(early);
  await using h2 = await startUpstream(early, {
    cert: Deno.readTextFileSync(`${TLS}/cert.pem`),
    key: Deno.readTextFileSync(`${TLS}/key.pem`),
    hostname: "localhost",
  });
  await using prox = await startProxy(
    `${config(h1.url)}  "/h2":
    type: proxy
    target: "${h2.url}"
    tls: { ca_cert: "${TLS}/ca.pem" }
`,
    { keepListen: true, tls: true },
  );
  await using h3 = await connectH3({ hostname: "127.0.0.1", port: prox.port, caCerts: [ca] });
  // The fields fetch would add itself: with them the request goes to the upstream over HTTP/2.
  const headers = {
    "user-agent": "t",
    accept: "*/*",
    "accept-language": "en",
    "accept-encoding": "identity",
  };
  for (const path of ["/x", "/h2/x"]) {
    for (let i = 0; i < 5; i++) {
      let sent = 0;
      const body = new ReadableStream<Uint8Array>({
        pull(c) {
          if (sent++ < 160) c.enqueue(new Uint8Array(65536));
          else c.close();
        },
      });
      const res = await h3.request(path, { method: "POST", headers, body });
      assert.equal(res.status, 413, path);
      // Cancelling the unread upload took the client for gone, which cut this answer short.
      assert.equal(new TextDecoder().decode(res.body), "too large, says the upstream", path);
    }
  }
});
