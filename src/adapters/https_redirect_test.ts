import assert from "node:assert/strict";
import { loadConfigText } from "../config/load.ts";
import { ProxyError } from "../domain/errors.ts";
import { buildSnapshot } from "../proxy/snapshot.ts";
import { observedHandler } from "../proxy/pipeline.ts";
import { noopMetrics, silentLogger } from "../ports.ts";
import type { AccessRecord, ClientInfo } from "../ports.ts";
import type { AcmeController } from "./acme.ts";
import { redirectHandler } from "./https_redirect.ts";
import { listen } from "./http_serve.ts";

const info: ClientInfo = {
  remoteAddr: { hostname: "192.0.2.7", port: 4000 },
  localPort: 80,
  protocol: "http/1.1",
  tls: false,
};

/** The plain-HTTP listener's handler as server.ts builds it, with ACME answering one token. */
function plainListener(yaml: string) {
  const { config, issues } = loadConfigText(
    `listen_addr: "127.0.0.1:0"\nroutes: { /x: { type: redirect, target: /y } }\n${yaml}`,
    {
      file: "t.yaml",
      env: { exists: () => true },
    },
  );
  assert.ok(config, JSON.stringify(issues));
  const snapshot = buildSnapshot(config, { version: 1 });
  const acme = {
    answerChallenge(req: Request) {
      if (req.url.endsWith("/known")) return Promise.resolve(new Response("key-auth"));
      return Promise.reject(new ProxyError("not_found", "Not found"));
    },
  } as unknown as AcmeController;
  const records: AccessRecord[] = [];
  const handler = observedHandler(
    redirectHandler({ acme: () => acme, status: () => 308, httpsPort: () => 8443 }),
    {
      deps: {
        snapshot: () => snapshot,
        upstream: { send: () => Promise.reject(new Error("unused")), close: async () => {} },
        files: { stat: () => Promise.resolve(null), open: () => Promise.resolve(null) },
        clock: { now: () => 1_700_000_000_000, monotonic: () => 0 },
        logger: silentLogger,
        metrics: noopMetrics,
        access: (r) => records.push(r),
        random: () => 0.5,
      },
      label: "(plain_http)",
    },
  );
  return { handler, records };
}

Deno.test("redirectHandler: an unknown ACME challenge token gets the top-level 404 page", async () => {
  const { handler, records } = plainListener(
    `error_pages: { 404: { body: "<h1>{status}: {uri_path}</h1>", content_type: text/html } }`,
  );
  const at = (url: string) => new Request(url, { headers: { host: new URL(url).host } });
  const known = await handler(at("http://a.test/.well-known/acme-challenge/known"), info);
  assert.equal(known.status, 200);
  assert.equal(await known.text(), "key-auth");
  const res = await handler(at("http://a.test/.well-known/acme-challenge/nope"), info);
  assert.equal(res.status, 404);
  assert.equal(res.headers.get("content-type"), "text/html; charset=utf-8");
  assert.equal(res.headers.get("x-request-id"), "7fffffff-000001");
  assert.equal(await res.text(), "<h1>404: /.well-known/acme-challenge/nope</h1>");
  assert.deepEqual(
    records.map((r) => [r.status, r.error, r.requestId]),
    [[200, null, "7fffffff-000000"], [404, "destination_not_found", "7fffffff-000001"]],
  );
});

Deno.test("redirectHandler: without pages, a bad Host is Prox's short 400 with the request id", async () => {
  const { handler } = plainListener("");
  const res = await handler(
    new Request("http://a.test/p", { headers: { host: "evil.test/x" } }),
    info,
  );
  assert.equal(res.status, 400);
  assert.equal(await res.text(), "Invalid Host header\nrequest id: 7fffffff-000000\n");
  const ok = await handler(new Request("http://a.test/p?q", { headers: { host: "a.test" } }), info);
  assert.equal(ok.status, 308);
  assert.equal(ok.headers.get("location"), "https://a.test:8443/p?q");
});

Deno.test("redirect listener with ACME on: a Host that is not a host gets 400, not a 500", async () => {
  const l = listen({ hostname: "127.0.0.1", port: 0 }, {
    handler: plainListener("").handler,
    logger: silentLogger,
  });
  const ask = async (host: string, path: string) => {
    const c = await Deno.connect({ hostname: "127.0.0.1", port: l.port });
    try {
      await c.write(new TextEncoder().encode(`GET ${path} HTTP/1.1\r\nHost: ${host}\r\n\r\n`));
      const buf = new Uint8Array(1024);
      const n = await c.read(buf);
      return new TextDecoder().decode(buf.subarray(0, n ?? 0)).split("\r\n")[0];
    } finally {
      c.close();
    }
  };
  try {
    // URL parsing of "http://a b/…" threw inside the handler: Deno.serve's onError answered 500.
    assert.equal(await ask("a b", "/.well-known/acme-challenge/t"), "HTTP/1.1 400 Bad Request");
    assert.equal(await ask("a b", "/x"), "HTTP/1.1 400 Bad Request");
    assert.equal(await ask("a.test", "/.well-known/acme-challenge/known"), "HTTP/1.1 200 OK");
    assert.equal(await ask("a.test", "/x"), "HTTP/1.1 308 Permanent Redirect");
  } finally {
    await l.close();
  }
});

Deno.test("redirect listener: a request without Host gets 400, not a redirect to Deno's made-up localhost", async () => {
  const { handler } = plainListener("");
  // Deno.serve names `localhost:<its port>` for a request without Host: that went into Location.
  for (const protocol of ["http/1.1", "h2c"] as const) {
    const at = { ...info, protocol, localPort: 8081 };
    const res = await handler(new Request("http://localhost:8081/p"), at);
    assert.equal(res.status, 400);
    assert.match(await res.text(), /^Missing Host header\n/);
  }
  // Relayed by Prox's engine (accept_proxy_protocol): the listener names the made-up authority.
  const relayed = { ...info, protocol: "h2c" as const, localPort: 80, authority: "localhost:80" };
  assert.equal((await handler(new Request("http://localhost:9999/p"), relayed)).status, 400);
  // Over HTTP/2 the authority is :authority, and no Host field comes.
  const h2 = await handler(new Request("http://a.test/p"), { ...info, protocol: "h2c" });
  assert.equal(h2.status, 308);
  assert.equal(h2.headers.get("location"), "https://a.test:8443/p");
  const l = listen({ hostname: "127.0.0.1", port: 0 }, { handler, logger: silentLogger });
  try {
    for (const version of ["1.1", "1.0"]) {
      const c = await Deno.connect({ hostname: "127.0.0.1", port: l.port });
      try {
        await c.write(new TextEncoder().encode(`GET /p HTTP/${version}\r\n\r\n`));
        const buf = new Uint8Array(1024);
        const n = await c.read(buf);
        const head = new TextDecoder().decode(buf.subarray(0, n ?? 0));
        assert.match(head, /^HTTP\/1\.[01] 400 /, head);
        assert.doesNotMatch(head, /location:/i);
      } finally {
        c.close();
      }
    }
  } finally {
    await l.close();
  }
});
