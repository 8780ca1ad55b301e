// `basic_auth` through a real Prox with real bcrypt: fetch (HTTP/1.1), curl (HTTP/2, -u), the
// in-repo HTTP/3 client, WebSocket upgrades (ws), an htpasswd file, the access log and metrics;
// and the CLI: `prox hash-password`, then `prox validate` and `prox test` on the result.
import assert from "node:assert/strict";
import { interopTest, ROOT, run, startUpstream, waitFor } from "../_harness.ts";
import { startProxy } from "./_proxy.ts";
import { connect, wsUpstream } from "./_ws.ts";
import { connectH3 } from "../../src/adapters/h3/client.ts";
import { silentLogger } from "../../src/ports.ts";
import { startServer } from "../../src/server.ts";
import type { Logger } from "../../src/ports.ts";

const TLS = `${ROOT}/tests/fixtures/tls`;
const ca = Deno.readTextFileSync(`${TLS}/ca.pem`);
// `htpasswd -nbB -C 5 alice 'wonder:land'` and `htpasswd -nbB -C 5 jürgen pässwörd`
const ALICE = "$2y$05$AYw6TXrwl9Rc4rj86MFm9eehdwDZG3Q6N1P71NCqe/9kbg8p0mn3a";
const JURGEN = "jürgen:$2y$05$/EKitXZEdPzoCJE7yt..5e0E/0E6MMktOEagPRm/1lWDUmVMoxNve";

const basic = (user: string, password: string) =>
  `Basic ${btoa(String.fromCharCode(...new TextEncoder().encode(`${user}:${password}`)))}`;

function recorder(): { lines: Record<string, unknown>[]; logger: Logger } {
  const lines: Record<string, unknown>[] = [];
  return { lines, logger: { ...silentLogger, info: (m, f) => m === "access" && lines.push(f!) } };
}

/** An upstream that answers with the Authorization and X-User it received. */
const echoAuth = () =>
  startUpstream((req) =>
    new Response(`${req.headers.get("authorization")} ${req.headers.get("x-user")}`)
  );

Deno.test("basic_auth on a real Prox: 401 challenge, htpasswd users, UTF-8, no Authorization upstream", async () => {
  await using up = await echoAuth();
  const dir = await Deno.makeTempDir();
  const { lines, logger } = recorder();
  try {
    await Deno.writeTextFile(`${dir}/htpasswd`, `# staff\n${JURGEN}\n`);
    await using prox = await startProxy(
      `health_check: { enabled: false }
admin: { listen_addr: "127.0.0.1:0" }
routes:
  "/":
    type: proxy
    target: "${up.url}"
    request_headers: { add: { X-User: "{auth_user}" } }
    basic_auth:
      realm: Staff
      users: { alice: "${ALICE}" }
      users_file: "${dir}/htpasswd"
  "/fwd":
    type: proxy
    target: "${up.url}"
    basic_auth: { users: { alice: "${ALICE}" }, forward_authorization: true }
`,
      { logger },
    );
    const none = await fetch(`${prox.url}/x`);
    assert.equal(none.status, 401);
    assert.equal(none.headers.get("www-authenticate"), 'Basic realm="Staff", charset="UTF-8"');
    assert.match(await none.text(), /^Unauthorized\n/);
    const wrong = await fetch(`${prox.url}/x`, { headers: { authorization: basic("alice", "x") } });
    assert.equal(wrong.status, 401);
    await wrong.body?.cancel();
    const ok = await fetch(`${prox.url}/x`, {
      headers: { authorization: basic("alice", "wonder:land") },
    });
    assert.equal(ok.status, 200);
    assert.equal(await ok.text(), "null alice");
    // from the htpasswd file, a UTF-8 name and password
    const utf8 = await fetch(`${prox.url}/x`, {
      headers: { authorization: basic("jürgen", "pässwörd") },
    });
    assert.equal(await utf8.text(), "null j%C3%BCrgen");
    // forward_authorization: the upstream gets it as sent
    const creds = basic("alice", "wonder:land");
    const fwd = await fetch(`${prox.url}/fwd/`, { headers: { authorization: creds } });
    assert.equal(await fwd.text(), `${creds} null`);

    await waitFor(() => lines.length === 5);
    assert.deepEqual(lines.map((l) => [l.status, l.authUser ?? null]), [
      [401, null],
      [401, null],
      [200, "alice"],
      [200, "jürgen"],
      [200, "alice"],
    ]);
    assert.equal(lines[0].error, "http_request_denied");
    const metrics = await (await fetch(`http://127.0.0.1:${prox.server.admin!.port}/metrics`))
      .text();
    assert.match(
      metrics,
      /^prox_access_denied_total\{route="\/",reason="credentials_missing"\} 1$/m,
    );
    assert.match(metrics, /^prox_access_denied_total\{route="\/",reason="credentials_wrong"\} 1$/m);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("basic_auth: editing the users_file reloads its users", async () => {
  await using up = await echoAuth();
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/htpasswd`, `alice:${ALICE}\n`);
    await Deno.writeTextFile(
      `${dir}/config.yaml`,
      `listen_addr: "127.0.0.1:0"
health_check: { enabled: false }
routes:
  "/": { type: proxy, target: "${up.url}", basic_auth: { users_file: "${dir}/htpasswd" } }
`,
    );
    let reloads = 0;
    const server = await startServer({ path: `${dir}/config.yaml` }, {
      logger: silentLogger,
      watchDebounceMs: 20,
      onReload: (r) => void (r.ok && reloads++),
    });
    try {
      const status = async (user: string, pw: string) => {
        const res = await fetch(`http://127.0.0.1:${server.port}/`, {
          headers: { authorization: basic(user, pw) },
        });
        await res.body?.cancel();
        return res.status;
      };
      assert.equal(await status("alice", "wonder:land"), 200);
      assert.equal(await status("jürgen", "pässwörd"), 401);
      await Deno.writeTextFile(`${dir}/htpasswd`, `${JURGEN}\n`);
      // Polling with passwords would spend the client's check budget: wait for the reload.
      await waitFor(() => reloads === 1, { what: "the reload" });
      assert.equal(await status("jürgen", "pässwörd"), 200);
      assert.equal(await status("alice", "wonder:land"), 401);
    } finally {
      await server.shutdown();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("basic_auth: a mirrored copy gets no Authorization, and a refused request no copy", async () => {
  await using up = await echoAuth();
  const copies: (string | null)[] = [];
  await using shadow = await startUpstream((req) => {
    copies.push(req.headers.get("authorization"));
    return new Response("shadow");
  });
  await using prox = await startProxy(`
health_check: { enabled: false }
routes:
  "/":
    type: proxy
    target: "${up.url}"
    mirror: { target: "${shadow.url}" }
    basic_auth: { users: { alice: "${ALICE}" } }
`);
  const refused = await fetch(`${prox.url}/a`);
  assert.equal(refused.status, 401);
  await refused.body?.cancel();
  const ok = await fetch(`${prox.url}/b`, {
    headers: { authorization: basic("alice", "wonder:land") },
  });
  assert.equal(await ok.text(), "null null");
  await waitFor(() => copies.length === 1, { what: "the mirrored copy" });
  assert.deepEqual(copies, [null]);
});

Deno.test("basic_auth with a response cache: one user's answer is never served to another", async () => {
  let reached = 0;
  await using up = await startUpstream((req) => {
    reached++;
    return new Response(`for ${req.headers.get("x-user")}`, {
      headers: { "cache-control": "max-age=60" },
    });
  });
  await using prox = await startProxy(`
health_check: { enabled: false }
routes:
  "/":
    type: proxy
    target: "${up.url}"
    cache: true
    request_headers: { add: { X-User: "{auth_user}" } }
    basic_auth: { users: { alice: "${ALICE}", "jürgen": "${JURGEN.slice(7)}" } }
`);
  const as = async (user: string, pw: string) => {
    const res = await fetch(`${prox.url}/page`, { headers: { authorization: basic(user, pw) } });
    return await res.text();
  };
  assert.equal(await as("alice", "wonder:land"), "for alice");
  // RFC 9111 §3.5: an answer to a request with Authorization is not stored (nor is it once
  // basic_auth has removed the field for the upstream)
  assert.equal(await as("jürgen", "pässwörd"), "for j%C3%BCrgen");
  assert.equal(await as("alice", "wonder:land"), "for alice");
  assert.equal(reached, 3);
  const anonymous = await fetch(`${prox.url}/page`);
  assert.equal(anonymous.status, 401);
  await anonymous.body?.cancel();
});

Deno.test("basic_auth guards redirect, static and websocket routes too", async () => {
  await using ws = await wsUpstream((sock, req) => sock.send(String(req.headers.authorization)));
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/index.html`, "secret page");
    const auth = `basic_auth: { users: { alice: "${ALICE}" } }`;
    await using prox = await startProxy(`
routes:
  "/r": { type: redirect, target: "https://example.com/", ${auth} }
  "/s": { type: static, root: "${dir}", ${auth} }
  "/ws": { type: websocket, target: "${ws.url}", ${auth} }
`);
    const creds = { authorization: basic("alice", "wonder:land") };
    const r = await fetch(`${prox.url}/r/x`, { redirect: "manual" });
    assert.equal(r.status, 401);
    assert.equal(r.headers.get("location"), null);
    await r.body?.cancel();
    const r2 = await fetch(`${prox.url}/r/x`, { redirect: "manual", headers: creds });
    assert.equal(r2.status, 307);
    await r2.body?.cancel();
    const s = await fetch(`${prox.url}/s/`);
    assert.equal(s.status, 401);
    assert.ok(!(await s.text()).includes("secret"));
    assert.equal(await (await fetch(`${prox.url}/s/`, { headers: creds })).text(), "secret page");
    await assert.rejects(connect(`ws://127.0.0.1:${prox.port}/ws`), { status: 401 });
    const sock = await connect(`ws://127.0.0.1:${prox.port}/ws`, [], { headers: creds });
    const first = await new Promise<string>((ok) => sock.once("message", (d) => ok(String(d))));
    assert.equal(first, "undefined"); // the upstream handshake carried no Authorization
    sock.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

interopTest("basic_auth over HTTP/2 (curl -u) and HTTP/3", ["curl"], async () => {
  await using up = await echoAuth();
  await using prox = await startProxy(
    `listen_addr: "127.0.0.1:0"
tls: { cert_path: "${TLS}/cert.pem", key_path: "${TLS}/key.pem" }
protocols: { http3_enabled: true }
health_check: { enabled: false }
routes:
  "/":
    type: proxy
    target: "${up.url}"
    request_headers: { add: { X-User: "{auth_user}" } }
    basic_auth: { users: { alice: "${ALICE}" } }
`,
    { keepListen: true, tls: true },
  );
  const curl = (...args: string[]) =>
    run("curl", [
      "-sS",
      "--http2",
      "--cacert",
      `${TLS}/ca.pem`,
      "-w",
      " %{http_version} %{http_code}",
      "--resolve",
      `localhost:${prox.port}:127.0.0.1`,
      ...args,
      `https://localhost:${prox.port}/x`,
    ]);
  assert.match((await curl()).stdout, /^Unauthorized\n.* 2 401$/s);
  assert.equal((await curl("-u", "alice:wonder:land")).stdout, "null alice 2 200");
  await using h3 = await connectH3({ hostname: "127.0.0.1", port: prox.port, caCerts: [ca] });
  const refused = await h3.request("/x");
  assert.equal(refused.status, 401);
  assert.equal(
    refused.headers.get("www-authenticate"),
    'Basic realm="Restricted", charset="UTF-8"',
  );
  const ok = await h3.request("/x", { headers: { authorization: basic("alice", "wonder:land") } });
  assert.equal(ok.status, 200);
  assert.equal(new TextDecoder().decode(ok.body), "null alice");
});

Deno.test("prox hash-password, then validate and prox test with basic_auth and ip_access", async () => {
  const prox = (args: string[], o: { cwd: string; stdin?: string }) =>
    run(
      Deno.execPath(),
      ["run", "-A", "--config", `${ROOT}/deno.json`, `${ROOT}/mod.ts`, ...args],
      o,
    );
  const dir = await Deno.makeTempDir({ prefix: "prox-auth-" });
  try {
    const hashed = await prox(["hash-password"], { cwd: dir, stdin: "s3cret pw\n" });
    assert.equal(hashed.code, 0, hashed.stderr);
    const hash = hashed.stdout.trim();
    assert.match(hash, /^\$2b\$10\$[./A-Za-z0-9]{53}$/);
    await Deno.writeTextFile(
      `${dir}/config.yaml`,
      `listen_addr: "127.0.0.1:3000"
routes:
  "/admin":
    type: proxy
    target: http://10.0.0.2:8080
    ip_access: { allow: [10.0.0.0/8] }
    basic_auth: { users: { ops: "${hash}" } }
`,
    );
    const valid = await prox(["validate"], { cwd: dir });
    assert.equal(valid.code, 0, valid.stdout + valid.stderr);
    await Deno.writeTextFile(
      `${dir}/cases.yaml`,
      `- request: /admin/x
  client_ip: 192.0.2.1
  expect: { route: /admin, status: 403 }
- request: /admin/x
  client_ip: 10.1.2.3
  expect: { status: 401 }
- request: /admin/x
  client_ip: 10.1.2.3
  headers: { Authorization: "${basic("ops", "anything")}" }
  expect: { upstream: http://10.0.0.2:8080/x, headers: { Authorization: null } }
`,
    );
    const tested = await prox(["test", "cases.yaml"], { cwd: dir });
    assert.equal(tested.code, 0, tested.stdout + tested.stderr);
    await Deno.writeTextFile(
      `${dir}/config.yaml`,
      `listen_addr: "127.0.0.1:3000"
routes:
  "/": { type: redirect, target: /x, basic_auth: { users: { ops: "s3cret pw" } } }
`,
    );
    const refused = await prox(["validate"], { cwd: dir });
    assert.equal(refused.code, 1);
    assert.match(
      refused.stdout + refused.stderr,
      /config\.yaml:3:61: error: .*plain text.*\n.*prox hash-password/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("basic_auth's 401 and ip_access's 403 keep their headers under error_pages", async () => {
  await using up = await echoAuth();
  await using prox = await startProxy(`
health_check: { enabled: false }
error_pages: { 401: { body: "please log in" }, 403: { body: "not from here" } }
routes:
  "/a": { type: proxy, target: "${up.url}", basic_auth: { users: { alice: "${ALICE}" } } }
  "/b": { type: proxy, target: "${up.url}", ip_access: { deny: [all] } }
`);
  const a = await fetch(`${prox.url}/a`);
  assert.equal(a.status, 401);
  assert.equal(await a.text(), "please log in");
  assert.equal(a.headers.get("www-authenticate"), 'Basic realm="Restricted", charset="UTF-8"');
  const b = await fetch(`${prox.url}/b`);
  assert.equal(b.status, 403);
  assert.equal(await b.text(), "not from here");
  assert.equal(b.headers.get("proxy-status"), "prox; error=http_request_denied");
});

Deno.test("basic_auth runs before forward_auth: a request it refuses never reaches the auth service", async () => {
  await using up = await echoAuth();
  let asked = 0;
  await using authService = await startUpstream(
    () => (asked++, new Response(null, { status: 200 })),
  );
  await using prox = await startProxy(`
health_check: { enabled: false }
routes:
  "/":
    type: proxy
    target: "${up.url}"
    basic_auth: { users: { alice: "${ALICE}" } }
    forward_auth: { url: "${authService.url}/check" }
`);
  const refused = await fetch(`${prox.url}/x`);
  assert.equal(refused.status, 401);
  await refused.body?.cancel();
  assert.equal(asked, 0);
  const ok = await fetch(`${prox.url}/x`, {
    headers: { authorization: basic("alice", "wonder:land") },
  });
  assert.equal(ok.status, 200);
  await ok.body?.cancel();
  assert.equal(asked, 1);
});
