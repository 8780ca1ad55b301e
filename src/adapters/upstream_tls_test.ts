// The upstream client over TLS: custom CA, server name, insecure_skip_verify, and the h2/h1
// choice for origins that speak h2 (fetch only when it cannot alter the bytes).
import assert from "node:assert/strict";
import { startUpstream, waitFor } from "../../tests/_harness.ts";
import { ProxyError } from "../domain/errors.ts";
import type { UpstreamRequest, UpstreamTls } from "../ports.ts";
import { createUpstreamClient } from "./upstream_client.ts";
import { fetchSafe } from "./upstream_h2.ts";

const dir = new URL("../../tests/fixtures/tls/", import.meta.url);
const cert = Deno.readTextFileSync(new URL("cert.pem", dir));
const key = Deno.readTextFileSync(new URL("key.pem", dir));
const ca = Deno.readTextFileSync(new URL("ca.pem", dir));

function request(url: string, tls?: UpstreamTls, headers: HeadersInit = {}): UpstreamRequest {
  const u = new URL(url);
  const h = new Headers(headers);
  if (!h.has("host")) h.set("host", "backend.test");
  return {
    origin: u,
    target: u.pathname + u.search,
    method: "GET",
    headers: h,
    body: null,
    timeouts: { connect: 2_000, responseHeader: 5_000, idle: 5_000 },
    tls,
  };
}

/** Fields with which fetch sends a request to `url`'s origin as built (see fetchSafe). */
function fetchSafeFields(url: string) {
  return { host: new URL(url).host, "user-agent": "ua", accept: "*/*", "accept-language": "en" };
}

async function gzip(s: string): Promise<Uint8Array<ArrayBuffer>> {
  const z = new Blob([s]).stream().pipeThrough(new CompressionStream("gzip"));
  return new Uint8Array(await new Response(z).arrayBuffer());
}

Deno.test("upstream client over TLS: custom CA, h2 when safe, HTTP/1.1 when fetch would decode", async () => {
  const gz = await gzip("compressed body");
  await using up = await startUpstream((req) =>
    new Response(gz, {
      headers: {
        "content-encoding": "gzip",
        "x-host": req.headers.get("host") ?? "",
        "x-lang": req.headers.get("accept-language") ?? "",
      },
    }), { cert, key });
  const client = createUpstreamClient();
  try {
    const tls = { caCerts: [ca] };
    // Every field fetch would add is there, Host is the origin's, no Accept-Encoding (identity
    // is asked for): fetch sends the request as built, over h2, and no h1 pool opens.
    const full = fetchSafeFields(up.url);
    const h2 = await client.send(request(up.url, tls, full));
    assert.equal(h2.headers.get("x-host"), full.host);
    assert.deepEqual(new Uint8Array(await h2.arrayBuffer()), gz);
    assert.deepEqual(client.stats(), []);
    // gzip accepted: fetch would decode, so HTTP/1.1 carries it and the bytes are untouched.
    const h1 = await client.send(request(up.url, tls, { ...full, "accept-encoding": "gzip" }));
    assert.equal(h1.headers.get("content-encoding"), "gzip");
    assert.deepEqual(new Uint8Array(await h1.arrayBuffer()), gz);
    assert.deepEqual(client.stats().map((s) => s.open), [1]);
    // Fetch would add Accept-Language, or send a Host that differs from :authority (preserve_host):
    // HTTP/1.1 again, with the headers as built.
    const { "accept-language": _, ...noLanguage } = full;
    const lang = await client.send(request(up.url, tls, noLanguage));
    assert.equal(lang.headers.get("x-lang"), "", "fetch would have sent Accept-Language: *");
    await lang.body?.cancel();
    assert.equal(fetchSafe(new Headers({ ...full, host: "backend.test" }), full.host), false);
    assert.equal(fetchSafe(new Headers(full), full.host), true);
  } finally {
    await client.close();
  }
});

Deno.test("upstream client over TLS: unknown CA is a connect error; skip-verify and server name work", async () => {
  await using up = await startUpstream(() => new Response("secure"), { cert, key });
  const client = createUpstreamClient({ http2: false });
  try {
    await assert.rejects(client.send(request(up.url)), (err: unknown) => {
      assert.ok(err instanceof ProxyError);
      assert.equal(err.kind, "connect");
      assert.equal(err.sentNothing, true);
      assert.match(err.message, /Cannot connect to upstream "https:\/\/127\.0\.0\.1:\d+": TLS/);
      return true;
    });
    const insecure = await client.send(request(up.url, { insecureSkipVerify: true }));
    assert.equal(await insecure.text(), "secure");
    const again = await client.send(request(up.url, { insecureSkipVerify: true }));
    assert.equal(await again.text(), "secure");
    const named = await client.send(request(up.url, { caCerts: [ca], serverName: "example.com" }));
    assert.equal(await named.text(), "secure");
    await assert.rejects(
      client.send(request(up.url, { caCerts: [ca], serverName: "other.test" })),
      (err: unknown) => err instanceof ProxyError && err.kind === "connect",
    );
  } finally {
    await client.close();
  }
});

Deno.test("upstream client over TLS: skip-verify to an IPv6 literal with letters sends no SNI", async () => {
  // node:tls refuses an IP as the server name; "::ffff:7f00:1" was taken for a name.
  await using up = await startUpstream(() => new Response("secure"), {
    cert,
    key,
    hostname: "::",
  });
  const client = createUpstreamClient({ http2: false });
  try {
    for (const host of ["[::ffff:127.0.0.1]", "[::1]"]) {
      const url = `https://${host}:${up.port}/`;
      const res = await client.send(request(url, { insecureSkipVerify: true }));
      assert.equal(await res.text(), "secure", url);
      const ip = await client.send(
        request(url, { insecureSkipVerify: true, serverName: "::ffff:7f00:1" }),
      );
      assert.equal(await ip.text(), "secure", `${url} with an IP server_name`);
    }
  } finally {
    await client.close();
  }
});

Deno.test("upstream client: a name that does not resolve says so, with or without verification", async () => {
  const client = createUpstreamClient({ http2: false });
  try {
    // RFC 6761: .invalid never resolves. node:tls said "getaddrinfo ENOTFOUND …" instead.
    for (const tls of [undefined, { insecureSkipVerify: true }]) {
      await assert.rejects(
        client.send(request("https://no-such-host.invalid/", tls)),
        (err: unknown) => {
          assert.ok(err instanceof ProxyError);
          assert.equal(err.kind, "connect");
          assert.match(
            err.message,
            /^Cannot connect to upstream "https:\/\/no-such-host\.invalid": cannot resolve host \(/,
          );
          return true;
        },
      );
    }
  } finally {
    await client.close();
  }
});

Deno.test("upstream client over TLS: an h2 response body that stalls ends at the idle timeout", async () => {
  await using up = await startUpstream(() =>
    new Response(
      new ReadableStream({
        start(c) {
          c.enqueue(new TextEncoder().encode("first chunk, then nothing"));
        },
      }),
    ), { cert, key });
  const client = createUpstreamClient();
  try {
    const full = {
      host: new URL(up.url).host,
      "user-agent": "ua",
      accept: "*/*",
      "accept-language": "en",
    };
    const req = { ...request(up.url, { caCerts: [ca] }, full) };
    req.timeouts = { connect: 2_000, responseHeader: 5_000, idle: 200 };
    const res = await client.send(req);
    assert.deepEqual(client.stats(), [], "over h2");
    const t0 = performance.now();
    await assert.rejects(res.text(), (err: unknown) => {
      assert.ok(err instanceof ProxyError, String(err));
      assert.equal(err.kind, "timeout");
      return true;
    });
    assert.ok(performance.now() - t0 < 4_000, "cut by the idle timeout, not the test's");
  } finally {
    await client.close();
  }
});

Deno.test("upstream client over TLS: h2 requests obey the pool limits (in flight, queue_limit, 503)", async () => {
  const gates: (() => void)[] = [];
  await using up = await startUpstream(async () => {
    await new Promise<void>((r) => gates.push(r));
    return new Response("slow");
  }, { cert, key });
  const client = createUpstreamClient({ maxConnectionsPerUpstream: 2, queueLimit: 1 });
  try {
    const full = {
      host: new URL(up.url).host,
      "user-agent": "ua",
      accept: "*/*",
      "accept-language": "en",
    };
    const tls = { caCerts: [ca] }; // one route's TLS settings: one origin key
    const send = () => client.send(request(up.url, tls, full));
    const first = [send(), send()];
    await waitFor(() => gates.length === 2, { what: "two h2 requests at the upstream" });
    const queued = send();
    // fetch would have sent this one too and queued it without bound; the pool sheds it.
    await assert.rejects(send(), (e) => e instanceof ProxyError && e.kind === "overloaded");
    assert.equal(gates.length, 2);
    // What the admin API can know of fetch's h2: the requests in flight and waiting.
    assert.deepEqual(client.pools(), [{
      origin: new URL(up.url).origin,
      busy: 0,
      idle: 0,
      waiting: 1,
      opened: 0,
      reused: 0,
      h2Streams: 2,
    }]);
    gates.shift()!();
    assert.equal(await (await first[0]).text(), "slow");
    // The finished body freed a slot: the queued request goes through.
    await waitFor(() => gates.length === 2, { what: "the queued request at the upstream" });
    for (const g of gates.splice(0)) g();
    assert.equal(await (await first[1]).text(), "slow");
    assert.equal(await (await queued).text(), "slow");
    assert.deepEqual(client.stats(), [], "no HTTP/1.1 pool was used");
  } finally {
    await client.close();
  }
});

Deno.test("upstream client over TLS: equal CA lists share one pool (a reload builds new lists)", async () => {
  await using up = await startUpstream(() => new Response("ok"), { cert, key });
  const client = createUpstreamClient({ http2: false });
  try {
    for (let i = 0; i < 3; i++) {
      // A new list with the same certificate each time, as each reload's snapshot has.
      const res = await client.send(request(up.url, { caCerts: [ca] }));
      assert.equal(await res.text(), "ok");
    }
    assert.deepEqual(client.stats().map((s) => [s.open, s.idle]), [[1, 1]]);
  } finally {
    await client.close();
  }
});

Deno.test("upstream client over TLS: a failed handshake closes its connection (no descriptor left per attempt)", async () => {
  // A plain-HTTP upstream (an https target pointed at the wrong port), and one whose certificate
  // no configured CA signed: every attempt fails in the handshake.
  await using plain = await startUpstream(() => new Response("plain"));
  await using signed = await startUpstream(() => new Response("tls"), { cert, key });
  const fds = () => [...Deno.readDirSync("/proc/self/fd")].length;
  const client = createUpstreamClient();
  try {
    for (const url of [plain.url.replace("http:", "https:"), signed.url]) {
      const attempt = () =>
        assert.rejects(
          client.send(request(`${url}/health`)),
          (e) => e instanceof ProxyError && e.kind === "connect",
        );
      await attempt(); // the first creates what stays (the pool, the TLS setup)
      const before = fds();
      for (let i = 0; i < 20; i++) await attempt();
      // Each leaked one is an open socket: 20 more without the close.
      await waitFor(() => fds() - before < 5, { what: `descriptors of ${url} closed` });
    }
  } finally {
    await client.close();
  }
});

Deno.test("upstream client over TLS: upstream_protocol http1 keeps an origin that offers h2 on HTTP/1.1", async () => {
  await using up = await startUpstream(() => new Response("over h1"), { cert, key });
  const client = createUpstreamClient();
  try {
    const tls = { caCerts: [ca] };
    // A request fetch could send over h2 as it is (as in the first test of this file).
    const full = fetchSafeFields(up.url);
    const res = await client.send({ ...request(up.url, tls, full), protocol: "http1" });
    assert.equal(await res.text(), "over h1");
    // An HTTP/1.1 connection carried it; without the setting the same request goes over h2.
    assert.deepEqual(client.stats().map((s) => s.open), [1]);
    const h2 = await client.send(request(up.url, tls, full));
    assert.equal(await h2.text(), "over h1");
    assert.deepEqual(client.stats().map((s) => s.open), [1]);
    assert.equal(client.pools().find((p) => p.origin === up.url)?.h2Streams, 0);
  } finally {
    await client.close();
  }
});

Deno.test("upstream client over TLS: timeouts.connect 0s (none) keeps the h2 response-header timeout", async () => {
  let answer = () => {};
  const gate = new Promise<void>((r) => answer = r);
  await using up = await startUpstream(async () => {
    await gate;
    return new Response("late");
  }, { cert, key });
  const client = createUpstreamClient();
  try {
    const req = request(up.url, { caCerts: [ca] }, fetchSafeFields(up.url));
    req.timeouts = { connect: 0, responseHeader: 300, idle: 5_000 };
    // The test's own limit: a client that leaves (not a timeout) fails the test, not hangs it.
    req.signal = AbortSignal.timeout(4_000);
    const t0 = performance.now();
    await assert.rejects(client.send(req), (err: unknown) => {
      assert.ok(err instanceof ProxyError, String(err));
      assert.equal(err.kind, "timeout");
      return true;
    });
    assert.ok(performance.now() - t0 < 4_000, "cut by the header timeout, not the test's");
    assert.deepEqual(client.stats(), [], "over h2");
  } finally {
    answer();
    await client.close();
  }
});

/**
 * A TLS listener that speaks HTTP/1.1 only and answers `body`: with `alpn`, ALPN offers only that
 * (rustls then refuses a client that offers h2 alone); without, it takes no part in ALPN (as
 * nginx without http2).
 */
function h1OnlyUpstream(body: string, alpn?: string[]) {
  const listener = Deno.listenTls({
    hostname: "127.0.0.1",
    port: 0,
    cert,
    key,
    alpnProtocols: alpn,
  });
  const conns = new Set<Deno.Conn>();
  const served = (async () => {
    for await (const conn of listener) {
      conns.add(conn);
      (async () => {
        const buf = new Uint8Array(16 * 1024);
        let head = "";
        for (;;) {
          const n = await conn.read(buf);
          if (n === null) break;
          head += new TextDecoder().decode(buf.subarray(0, n));
          while (head.includes("\r\n\r\n")) {
            head = head.slice(head.indexOf("\r\n\r\n") + 4);
            await conn.write(
              new TextEncoder().encode(
                `HTTP/1.1 200 OK\r\ncontent-length: ${body.length}\r\n\r\n${body}`,
              ),
            );
          }
        }
      })().catch(() => {}).finally(() => {
        conns.delete(conn);
        try {
          conn.close();
        } catch { /* closed */ }
      });
    }
  })().catch(() => {});
  return {
    port: (listener.addr as Deno.NetAddr).port,
    async [Symbol.asyncDispose]() {
      listener.close();
      for (const c of conns) c.close();
      await served;
    },
  };
}

/** Sends the first connection to port `first`, every later one to `later` (pipes both ways). */
function switchingFront(first: number, later: number) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns: Deno.Conn[] = [];
  const pipes: Promise<unknown>[] = [];
  let n = 0;
  const accepted = (async () => {
    for await (const down of listener) {
      const port = n++ === 0 ? first : later;
      conns.push(down);
      pipes.push(
        Deno.connect({ hostname: "127.0.0.1", port }).then((up) => {
          conns.push(up);
          return Promise.allSettled([
            down.readable.pipeTo(up.writable),
            up.readable.pipeTo(down.writable),
          ]);
        }).catch(() => {}),
      );
    }
  })().catch(() => {});
  return {
    url: `https://localhost:${(listener.addr as Deno.NetAddr).port}`,
    async [Symbol.asyncDispose]() {
      listener.close();
      await accepted;
      for (const c of conns) {
        try {
          c.close();
        } catch { /* closed */ }
      }
      await Promise.allSettled(pipes);
    },
  };
}

// fetch carries the first; Prox's own HTTP/2 client the others (fetch cannot apply them).
const SWITCH_TLS: [string, UpstreamTls][] = [
  ["ca_cert", { caCerts: [ca] }],
  ["server_name", { caCerts: [ca], serverName: "localhost" }],
  ["insecure_skip_verify", { insecureSkipVerify: true }],
];
for (const alpn of [["http/1.1"], undefined]) {
  for (const [label, tls] of SWITCH_TLS) {
    Deno.test(`upstream client over TLS: an origin that chose h2 and now speaks only HTTP/1.1 is asked again (ALPN ${alpn ?? "none"}, ${label})`, async () => {
      // The ALPN probe meets an h2 server; the connections after it one that speaks only HTTP/1.1
      // (a redeploy, or an L4 balancer in front of mixed backends).
      await using h2 = await startUpstream(() => new Response("over h2"), { cert, key });
      await using h1 = h1OnlyUpstream("over h1", alpn);
      await using front = switchingFront(h2.port, h1.port);
      const client = createUpstreamClient();
      try {
        const send = async () => {
          const req = request(front.url, tls, fetchSafeFields(front.url));
          try {
            const res = await client.send(req);
            return `${res.status} ${await res.text()}`;
          } catch (err) {
            return (err as Error).message;
          }
        };
        // Refused in the handshake (no connection opened over h2), this one goes again after a new
        // probe; one the upstream answered the h2 preface on may have been read: over fetch it
        // fails, saying why (fetch's own message is only "fetch failed"). Prox's own client sees
        // that ALPN chose no h2 before it sends anything: that one goes again too.
        const first = await send();
        if (alpn || label !== "ca_cert") assert.equal(first, "200 over h1");
        else {assert.match(
            first,
            /^Cannot reach upstream "https:\/\/localhost:\d+": connection error/,
          );}
        // The origin does not stay h2 for good.
        assert.equal(await send(), "200 over h1", `first: ${first}`);
      } finally {
        await client.close();
      }
    });
  }
}

Deno.test("upstream client over TLS: an https target whose port speaks plain HTTP says so", async () => {
  await using plain = await startUpstream(() => new Response("plain"));
  const client = createUpstreamClient();
  try {
    const url = plain.url.replace("http:", "https:");
    for (const tls of [undefined, { insecureSkipVerify: true }]) {
      await assert.rejects(
        client.send(request(`${url}/`, tls)),
        (e) =>
          e instanceof ProxyError && e.kind === "connect" &&
          e.message.startsWith(`Cannot connect to upstream "${url}": no TLS there`),
      );
    }
  } finally {
    await client.close();
  }
});
