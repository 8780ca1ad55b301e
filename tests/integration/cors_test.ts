// `cors` through a real Prox: preflights answered before forward_auth and never proxied, the
// fields on the upstream's answers, on cached ones (per origin, never another origin's), on
// Prox's own 502 and on static files; the same over HTTP/2 (curl) and HTTP/3 (in-repo client);
// and a real page in headless Chromium calling another origin through Prox.
import assert from "node:assert/strict";
import { chromiumDumpDom, interopTest, ROOT, run, startUpstream, waitFor } from "../_harness.ts";
import { startProxy } from "./_proxy.ts";
import { connectH3 } from "../../src/adapters/h3/client.ts";

const TLS = `${ROOT}/tests/fixtures/tls`;
const ca = Deno.readTextFileSync(`${TLS}/ca.pem`);
const APP = "https://app.example.com";

/** An upstream recording what reached it; it sets CORS fields of its own, which Prox replaces. */
async function apiUpstream() {
  const seen: string[] = [];
  let n = 0;
  const server = await startUpstream((req) => {
    const path = new URL(req.url).pathname;
    seen.push(`${req.method} ${path}`);
    return new Response(`${req.method} ${path} ${++n}`, {
      headers: {
        "access-control-allow-origin": "*",
        "x-total": "42",
        ...(path.startsWith("/cached") ? { "cache-control": "max-age=60" } : {}),
      },
    });
  });
  return Object.assign(server, { seen });
}

/** A closed port: connecting to it is refused (502). */
function closedPort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

Deno.test("cors on a real Prox: preflight before forward_auth, actual, cached, 502 and static answers", async () => {
  await using api = await apiUpstream();
  let authCalls = 0;
  await using auth = await startUpstream((req) => {
    authCalls++;
    return new Response(null, { status: req.headers.has("authorization") ? 200 : 401 });
  });
  const dir = await Deno.makeTempDir({ prefix: "prox-cors-" });
  try {
    await Deno.writeTextFile(`${dir}/app.js`, "console.log(1)\n");
    await using prox = await startProxy(`
health_check: { enabled: false }
routes:
  "/api":
    type: proxy
    target: "${api.url}"
    forward_auth: { url: "${auth.url}/check" }
    cors:
      allow_origins: ["${APP}", "https://*.example.org"]
      allow_headers: [Content-Type, Authorization]
      expose_headers: [X-Total]
      allow_credentials: true
      max_age: 1h
  "/cached":
    type: proxy
    target: "${api.url}"
    path_rewrite: /cached
    cache: true
    cors: { allow_origins: ["${APP}", "https://b.example.com"] }
  "/gone":
    type: proxy
    target: "http://127.0.0.1:${closedPort()}"
    cors: { allow_origins: ["${APP}"] }
  "/s":
    type: static
    root: "${dir}"
    cors: { allow_origins: ["*"] }
`);
    // The preflight: 204 from Prox, the auth service and the upstream never asked.
    const pre = await fetch(`${prox.url}/api/items`, {
      method: "OPTIONS",
      headers: {
        origin: APP,
        "access-control-request-method": "PUT",
        "access-control-request-headers": "content-type,authorization",
      },
    });
    await pre.body?.cancel();
    assert.equal(pre.status, 204);
    assert.equal(pre.headers.get("access-control-allow-origin"), APP);
    assert.equal(pre.headers.get("access-control-allow-credentials"), "true");
    assert.equal(pre.headers.get("access-control-allow-headers"), "Content-Type, Authorization");
    assert.equal(pre.headers.get("access-control-max-age"), "3600");
    const evil = await fetch(`${prox.url}/api/items`, {
      method: "OPTIONS",
      headers: { origin: "https://evil-example.org", "access-control-request-method": "PUT" },
    });
    await evil.body?.cancel();
    assert.equal(evil.status, 403);
    assert.equal(evil.headers.get("access-control-allow-origin"), null);
    assert.equal(authCalls, 0);
    assert.deepEqual(api.seen, []);

    // The actual request: forward_auth's 401 and the upstream's 200 both readable by the page.
    const denied = await fetch(`${prox.url}/api/items`, {
      method: "PUT",
      headers: { origin: APP },
    });
    await denied.body?.cancel();
    assert.equal(denied.status, 401);
    assert.equal(denied.headers.get("access-control-allow-origin"), APP);
    const put = await fetch(`${prox.url}/api/items`, {
      method: "PUT",
      headers: { origin: "https://x.example.org", authorization: "Bearer t" },
    });
    assert.equal(await put.text(), "PUT /items 1");
    assert.equal(put.headers.get("access-control-allow-origin"), "https://x.example.org");
    assert.equal(put.headers.get("access-control-expose-headers"), "X-Total");
    assert.equal(put.headers.get("vary"), "Origin");
    assert.equal(authCalls, 2);

    // The cache stores the upstream's answer once; each origin gets its own fields.
    const cached = async (origin?: string) => {
      const res = await fetch(`${prox.url}/cached/x`, { headers: origin ? { origin } : {} });
      const body = await res.text();
      return { body, acao: res.headers.get("access-control-allow-origin"), res };
    };
    const a = await cached(APP);
    assert.deepEqual([a.body, a.acao], ["GET /cached/x 2", APP]);
    const b = await cached("https://b.example.com");
    assert.deepEqual([b.body, b.acao], ["GET /cached/x 2", "https://b.example.com"]);
    assert.match(b.res.headers.get("cache-status") ?? "", /hit/);
    const c = await cached("https://c.example.com");
    assert.deepEqual([c.body, c.acao], ["GET /cached/x 2", null]); // not the upstream's `*`
    const none = await cached();
    assert.deepEqual([none.body, none.acao], ["GET /cached/x 2", null]);
    assert.equal(none.res.headers.get("vary"), "Origin");

    // Prox's own 502, and a static file.
    const gone = await fetch(`${prox.url}/gone/x`, { headers: { origin: APP } });
    await gone.body?.cancel();
    assert.equal(gone.status, 502);
    assert.equal(gone.headers.get("access-control-allow-origin"), APP);
    const file = await fetch(`${prox.url}/s/app.js`, { headers: { origin: "https://any.test" } });
    assert.equal(await file.text(), "console.log(1)\n");
    assert.equal(file.headers.get("access-control-allow-origin"), "*");
    assert.deepEqual(api.seen, ["PUT /items", "GET /cached/x"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

interopTest("cors over HTTP/2 (curl) and HTTP/3 answers as over HTTP/1.1", ["curl"], async () => {
  await using api = await apiUpstream();
  await using prox = await startProxy(
    `listen_addr: "127.0.0.1:0"
tls: { cert_path: "${TLS}/cert.pem", key_path: "${TLS}/key.pem" }
protocols: { http3_enabled: true }
health_check: { enabled: false }
routes:
  "/":
    type: proxy
    target: "${api.url}"
    cors: { allow_origins: ["${APP}"], allow_methods: [GET, DELETE] }
`,
    { keepListen: true, tls: true },
  );
  const curl = (...args: string[]) =>
    run("curl", [
      "-sS",
      "--http2",
      "--cacert",
      `${TLS}/ca.pem`,
      "-D",
      "-",
      "-o",
      "/dev/null",
      "--resolve",
      `localhost:${prox.port}:127.0.0.1`,
      "-H",
      `Origin: ${APP}`,
      ...args,
      `https://localhost:${prox.port}/x`,
    ]);
  const pre = (await curl("-X", "OPTIONS", "-H", "Access-Control-Request-Method: DELETE")).stdout;
  assert.match(pre, /^HTTP\/2 204 ?\r\n/);
  assert.match(pre, /\r\naccess-control-allow-origin: https:\/\/app\.example\.com\r\n/);
  assert.match(pre, /\r\naccess-control-allow-methods: GET, DELETE\r\n/);
  const get = (await curl()).stdout;
  assert.match(get, /^HTTP\/2 200 ?\r\n/);
  assert.match(get, /\r\naccess-control-allow-origin: https:\/\/app\.example\.com\r\n/);
  assert.match(get, /\r\nvary: Origin\r\n/);

  await using h3 = await connectH3({ hostname: "127.0.0.1", port: prox.port, caCerts: [ca] });
  const h3pre = await h3.request("/x", {
    method: "OPTIONS",
    headers: { origin: APP, "access-control-request-method": "DELETE" },
  });
  assert.equal(h3pre.status, 204);
  assert.equal(h3pre.headers.get("access-control-allow-methods"), "GET, DELETE");
  const h3get = await h3.request("/x", { headers: { origin: APP } });
  assert.equal(h3get.status, 200);
  assert.equal(h3get.headers.get("access-control-allow-origin"), APP);
  assert.equal(h3get.headers.get("vary"), "Origin");
  assert.deepEqual(api.seen, ["GET /x", "GET /x"]);
});

/** The page: three cross-origin calls, reported to the page's own server when done. */
const page = (api: string) =>
  `<!doctype html><title>cors</title><body><p id="out">pending</p><script>
const out = [];
const call = async (name, path, init) => {
  try {
    const res = await fetch("${api}" + path, init);
    out.push(name + ":" + res.status + ":" + (await res.text()).split("\\n")[0] + ":" +
      res.headers.get("x-total"));
  } catch (e) {
    out.push(name + ":blocked");
  }
};
Promise.all([
  call("put", "/api/items", { method: "PUT", credentials: "include",
    headers: { "content-type": "application/json" }, body: "{}" }),
  call("auth", "/private/x", {}),
  call("closed", "/closed/x", {}),
]).then(() => {
  document.getElementById("out").textContent = out.sort().join(" ");
  return fetch("/report");
});
</script><script src="/wait.js"></script></body>`;

interopTest(
  "headless Chromium: a page calls another origin through Prox's cors",
  ["chromium"],
  async () => {
    await using api = await apiUpstream();
    let reported = false;
    let proxUrl = "";
    // /wait.js holds the page's load (and so --dump-dom) until the page has reported.
    await using site = await startUpstream(async (req) => {
      const path = new URL(req.url).pathname;
      if (path === "/report") {
        reported = true;
        return new Response("ok");
      }
      if (path === "/wait.js") {
        await waitFor(() => reported, { timeoutMs: 20_000 }).catch(() => {});
        return new Response("", { headers: { "content-type": "text/javascript" } });
      }
      return new Response(page(proxUrl), { headers: { "content-type": "text/html" } });
    });
    await using prox = await startProxy(`
health_check: { enabled: false }
routes:
  "/api":
    type: proxy
    target: "${api.url}"
    cors:
      allow_origins: ["${site.url}"]
      allow_headers: [Content-Type]
      expose_headers: [X-Total]
      allow_credentials: true
  "/private":
    type: proxy
    target: "${api.url}"
    basic_auth: { users: { alice: "$2y$05$AYw6TXrwl9Rc4rj86MFm9eehdwDZG3Q6N1P71NCqe/9kbg8p0mn3a" } }
    cors: { allow_origins: ["${site.url}"] }
  "/closed":
    type: proxy
    target: "${api.url}"
    cors: { allow_origins: ["https://other.example.com"] }
`);
    proxUrl = prox.url;
    const out = await chromiumDumpDom(`${site.url}/`);
    assert.equal(out.code, 0, out.stderr.slice(-2000));
    // The PUT went through its preflight (answered by Prox); the page read the upstream's answer
    // and the exposed field, and Prox's own 401; the origin not listed was blocked by the browser.
    assert.match(
      out.stdout,
      /<p id="out">auth:401:Unauthorized:null closed:blocked put:200:PUT \/items \d:42<\/p>/,
    );
    assert.ok(!api.seen.some((s) => s.startsWith("OPTIONS")), api.seen.join());
    assert.ok(api.seen.includes("PUT /items"), api.seen.join());
  },
);
