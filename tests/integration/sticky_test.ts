// Sticky sessions (`sticky` on load_balance routes) through the real proxy: the cookie Prox sets,
// a client that keeps it, a target that goes away, and a cookie that names nothing.
import assert from "node:assert/strict";
import { startUpstream, waitFor } from "../_harness.ts";
import { startProxy } from "./_proxy.ts";
import { Backend } from "./_backend.ts";

Deno.test("sticky: a client keeps its target by Prox's cookie, and moves (with a new cookie) when it goes", async () => {
  await using a = new Backend("a").start();
  await using b = new Backend("b").start();
  await using c = new Backend("c").start();
  await using prox = await startProxy(`
health_check: { interval_secs: 1, timeout_secs: 1, unhealthy_threshold: 1, healthy_threshold: 1 }
routes:
  "/":
    type: load_balance
    targets: ["${a.url}", "${b.url}", "${c.url}"]
    sticky: { cookie: srv, max_age: 1h }
    retries: { attempts: 2 }
`);
  const get = async (cookie?: string) => {
    const res = await fetch(`${prox.url}/x`, { headers: cookie ? { cookie } : {} });
    return { name: await res.text(), set: res.headers.get("set-cookie") };
  };
  // Without a cookie: round robin, each answer with a cookie naming its target.
  const first = [await get(), await get(), await get()];
  assert.deepEqual(first.map((r) => r.name).sort(), ["a", "b", "c"]);
  for (const r of first) {
    assert.match(r.set ?? "", /^srv=[0-9a-f]{8}; Path=\/; Max-Age=3600; HttpOnly; SameSite=Lax$/);
    assert.ok(!r.set!.includes("127.0.0.1"), "the cookie does not show the target");
  }
  const cookieOf = (name: string) => first.find((r) => r.name === name)!.set!.split(";")[0];
  // With it: the same target every time (round robin would move on), and no new cookie.
  for (let k = 0; k < 6; k++) {
    const r = await get(`theme=dark; ${cookieOf("b")}`);
    assert.equal(r.name, "b");
    assert.equal(r.set, null);
  }
  // Its target gone: another one answers, with a cookie for it.
  await b.kill();
  const moved = await get(cookieOf("b"));
  assert.notEqual(moved.name, "b");
  assert.match(moved.set ?? "", /^srv=/);
  assert.equal(moved.set!.split(";")[0], cookieOf(moved.name));
  await waitFor(async () => (await get(cookieOf("b"))).name !== "b", { what: "b known down" });
  // A cookie that names no target of this route is ignored and replaced.
  const stranger = await get("srv=deadbeef");
  assert.ok(["a", "c"].includes(stranger.name));
  assert.match(stranger.set ?? "", /^srv=[0-9a-f]{8}/);
  assert.notEqual(stranger.set!.split(";")[0], "srv=deadbeef");
});

Deno.test("sticky: true defaults; Secure over HTTPS or a trusted X-Forwarded-Proto, the app's cookies kept", async () => {
  await using app = await startUpstream(() =>
    new Response("app", { headers: [["set-cookie", "session=1"], ["set-cookie", "x=2"]] })
  );
  await using prox = await startProxy(`
trusted_proxies: ["127.0.0.1/32"]
health_check: { enabled: false }
routes:
  "/":
    type: load_balance
    targets: ["${app.url}"]
    sticky: true
`);
  const res = await fetch(`${prox.url}/`, { headers: { "x-forwarded-proto": "https" } });
  await res.text();
  const cookies = res.headers.getSetCookie();
  assert.deepEqual(cookies.slice(0, 2), ["session=1", "x=2"]);
  assert.match(cookies[2], /^prox_sticky=[0-9a-f]{8}; Path=\/; HttpOnly; SameSite=Lax; Secure$/);
  const plain = await fetch(`${prox.url}/`);
  await plain.text();
  assert.doesNotMatch(plain.headers.getSetCookie()[2], /Secure/);
});

Deno.test("sticky secret_env: the cookie's value is keyed by the secret (an HMAC), and still keeps the client", async () => {
  await using a = new Backend("a").start();
  await using b = new Backend("b").start();
  const name = `PROX_TEST_STICKY_${crypto.randomUUID().slice(0, 8)}`;
  const yaml = (extra: string) => `
health_check: { enabled: false }
routes:
  "/":
    type: load_balance
    targets: ["${a.url}", "${b.url}"]
    sticky: { cookie: srv${extra} }
`;
  /** Each target's cookie value under `yaml`. */
  const values = async (text: string) => {
    await using prox = await startProxy(text);
    const out = new Map<string, string>();
    for (let i = 0; i < 2; i++) {
      const res = await fetch(`${prox.url}/x`);
      out.set(await res.text(), res.headers.get("set-cookie")!.split(";")[0]);
    }
    // The cookie keeps its client on the target that set it.
    for (const [target, cookie] of out) {
      for (let k = 0; k < 3; k++) {
        const res = await fetch(`${prox.url}/x`, { headers: { cookie } });
        assert.equal(await res.text(), target);
      }
    }
    return out;
  };
  try {
    const plain = await values(yaml(""));
    Deno.env.set(name, "first secret");
    const keyed = await values(yaml(`, secret_env: ${name}`));
    assert.match(keyed.get("a")!, /^srv=[0-9a-f]{16}$/);
    assert.notEqual(keyed.get("a"), plain.get("a"));
    // The same secret gives the same values (other instances, restarts); another secret others.
    assert.deepEqual(await values(yaml(`, secret_env: ${name}`)), keyed);
    Deno.env.set(name, "second secret");
    assert.notEqual((await values(yaml(`, secret_env: ${name}`))).get("a"), keyed.get("a"));
  } finally {
    Deno.env.delete(name);
  }
  // Unset: the config is refused, naming the variable.
  await assert.rejects(
    () => startProxy(yaml(`, secret_env: ${name}`)),
    (e: { issues?: { message: string }[] }) =>
      e.issues?.some((i) => i.message === `Environment variable ${name} is not set`) ?? false,
  );
});
