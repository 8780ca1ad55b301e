// The curl recipes of the Rust Prox README, run with curl against its own example config, with
// local upstreams in place of httpbin.org and postman-echo.com.
import assert from "node:assert/strict";
import { interopTest, ROOT, run, startUpstream } from "../_harness.ts";
import { startProxy } from "./_proxy.ts";

const TLS = `${ROOT}/tests/fixtures/tls`;

async function echo(name: string) {
  return await startUpstream(async (req) => {
    const u = new URL(req.url);
    return Response.json({
      upstream: name,
      url: u.pathname + u.search,
      headers: Object.fromEntries(req.headers),
      data: await req.text(),
    }, { headers: { "x-powered-by": "Express" } });
  });
}

function seedConfig(a: string, b: string): string {
  return `listen_addr: "127.0.0.1:0"
tls:
  cert_path: "${TLS}/cert.pem"
  key_path: "${TLS}/key.pem"
health_check: { enabled: false }
routes:
  "/":
    type: "redirect"
    target: "/static"
    status_code: 302
  "/static":
    type: "static"
    root: "${ROOT}/tests/fixtures/site"
  "/redirect":
    type: "redirect"
    target: "https://www.example.com"
    status_code: 302
  "/proxy":
    type: "proxy"
    target: "${a}"
    path_rewrite: "/anything"
    rate_limit: { by: "ip", requests: 10, period: "1m" }
    request_headers:
      add:
        "X-My-Custom-Header": "MyValue"
        "X-Forwarded-By": "Prox"
        "X-Real-IP": "{client_ip}"
      remove: ["User-Agent", "Referer"]
    response_headers:
      add: { "Server": "Prox" }
      remove: ["X-Powered-By"]
    request_body:
      condition: { path_matches: "/special" }
      set_text: "This is a modified request body."
  "/balance":
    type: "load_balance"
    targets: ["${a}", "${b}"]
    strategy: "round_robin"
    path_rewrite: "/anything"
`;
}

interopTest("seed README curl recipes behave as their comments say", ["curl"], async () => {
  await using a = await echo("a");
  await using b = await echo("b");
  await using prox = await startProxy(seedConfig(a.url, b.url), { keepListen: true, tls: true });
  const base = `https://127.0.0.1:${prox.port}`;
  const curl = async (...args: string[]) => {
    const r = await run("curl", ["-sS", "-k", ...args]);
    assert.equal(r.code, 0, r.stderr);
    return r.stdout;
  };

  // Test static content (the route root redirects to its slash form; -L follows)
  assert.match(await curl("-L", `${base}/static`), /static ok/);
  // Test redirection: / → /static/ → the index
  assert.match(await curl("-L", `${base}/`), /static ok/);
  assert.match(
    await curl("-o", "/dev/null", "-w", "%{redirect_url}", `${base}/redirect/x?q=1`),
    /^https:\/\/www\.example\.com\/x\?q=1$/,
  );
  // Test proxy and path rewriting
  assert.equal(JSON.parse(await curl(`${base}/proxy/get`)).url, "/anything/get");
  assert.equal(
    JSON.parse(await curl(`${base}/proxy/test/path?x=1`)).url,
    "/anything/test/path?x=1",
  );
  // Test request header addition
  const h = JSON.parse(
    await curl(
      "-H",
      "X-My-Custom-Header: OriginalValue",
      "-H",
      "Referer: r",
      `${base}/proxy/headers`,
    ),
  ).headers;
  assert.equal(h["x-my-custom-header"], "MyValue");
  assert.equal(h["x-forwarded-by"], "Prox");
  assert.equal(h["x-real-ip"], "127.0.0.1");
  assert.equal(h["user-agent"], undefined);
  assert.equal(h["referer"], undefined);
  // Test request body modification (POST to /proxy/special/…)
  const post = JSON.parse(
    await curl(
      "-X",
      "POST",
      "-d",
      '{"original": "data"}',
      "-H",
      "Content-Type: application/json",
      `${base}/proxy/special/post`,
    ),
  );
  assert.equal(post.data, "This is a modified request body.");
  // Test response header removal (X-Powered-By) and addition (Server: Prox)
  const head = await curl("-I", `${base}/proxy/get`);
  assert.match(head, /^server: Prox\r?$/im);
  assert.doesNotMatch(head, /x-powered-by/i);
  // Test load balancing: round robin alternates
  const seen: string[] = [];
  for (let i = 0; i < 4; i++) seen.push(JSON.parse(await curl(`${base}/balance/get`)).upstream);
  assert.deepEqual(seen.toSorted(), ["a", "a", "b", "b"]);
  assert.notEqual(seen[0], seen[1]);
  assert.equal(JSON.parse(await curl(`${base}/balance/bar`)).url, "/anything/bar");
});

Deno.test("seed header rules that did nothing there load and are skipped: Connection, remove Host, bad names", async () => {
  await using a = await echo("a");
  await using prox = await startProxy(`
health_check: { enabled: false }
routes:
  "/api":
    type: "proxy"
    target: "${a.url}"
    request_headers:
      add: { "Connection": "keep-alive", "X Bad Name": "v", "X-Forwarded-By": "Prox" }
      remove: ["Host", "Referer"]
    response_headers:
      add: { "Connection": "close", "Server": "Prox" }
`);
  const res = await fetch(`${prox.url}/api/x`, { headers: { referer: "r" } });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("server"), "Prox");
  const got = await res.json();
  assert.equal(got.headers["x-forwarded-by"], "Prox");
  assert.equal(got.headers.host, new URL(a.url).host, "Host is the target's, as the seed sent");
  assert.equal(got.headers.referer, undefined);
  assert.equal(got.headers["x bad name"], undefined);
  assert.equal(res.headers.get("connection"), null, "the rule's Connection: close is not sent");
});

Deno.test("seed header values beyond Latin-1 load and go out as their UTF-8 bytes, as the seed sent them", async () => {
  await using a = await echo("a");
  await using prox = await startProxy(`
health_check: { enabled: false }
routes:
  "/api":
    type: "proxy"
    target: "${a.url}"
    request_headers:
      add: { "X-Greeting": "Grüße ✓", "X-Lat": "café" }
    response_headers:
      add: { "Server": "Prox 🚀" }
`);
  const bytes = (s: string) => String.fromCharCode(...new TextEncoder().encode(s));
  const res = await fetch(`${prox.url}/api/x`);
  assert.equal(res.headers.get("server"), bytes("Prox 🚀"));
  const got = await res.json();
  assert.equal(got.headers["x-greeting"], bytes("Grüße ✓"));
  assert.equal(got.headers["x-lat"], "café", "Latin-1 text keeps its one byte per character");
});

Deno.test("seed rate limit message is the whole body, as written (a JSON message stays JSON)", async () => {
  await using a = await echo("a");
  await using prox = await startProxy(`
health_check: { enabled: false }
routes:
  "/api/v1":
    type: "proxy"
    target: "${a.url}"
    rate_limit:
      by: "header"
      header_name: "X-API-Key"
      requests: 1
      period: "30s"
      status_code: 403
      message: '{"error": "Rate limit exceeded for your API key."}'
  "/plain":
    type: "proxy"
    target: "${a.url}"
    rate_limit: { by: "route", requests: 1, period: "1m" }
`);
  const get = (path: string) => fetch(`${prox.url}${path}`, { headers: { "x-api-key": "k" } });
  await (await get("/api/v1/users")).body?.cancel();
  const denied = await get("/api/v1/users");
  assert.equal(denied.status, 403);
  assert.ok(denied.headers.get("x-request-id"));
  assert.equal(denied.headers.get("content-type"), "application/json");
  assert.deepEqual(await denied.json(), { error: "Rate limit exceeded for your API key." });
  await (await get("/plain")).body?.cancel();
  const plain = await get("/plain");
  assert.equal(plain.status, 429);
  assert.match(await plain.text(), /^Too Many Requests\nrequest id: /);
});
