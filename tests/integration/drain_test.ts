// Draining a target through the admin API (`POST /upstreams/drain`, `/upstreams/undrain`): no
// new requests for it while its own finish, /status showing them count down, back in rotation
// after, kept across a reload that keeps the target; with real upstreams and a real Prox.
import assert from "node:assert/strict";
import { startUpstream, waitFor } from "../_harness.ts";
import { startServer } from "../../src/server.ts";
import type { ProxServer } from "../../src/server.ts";
import { silentLogger } from "../../src/ports.ts";

const TOKEN = "drain-test-token";
const auth = { authorization: `Bearer ${TOKEN}` };

const yaml = (a: string, b: string, extra = "") =>
  `listen_addr: "127.0.0.1:0"
admin: { listen_addr: "127.0.0.1:0", token: "${TOKEN}" }
health_check: { enabled: false }
routes:
  /lb: { type: load_balance, targets: ["${a}", "${b}"] }
  /one: { type: proxy, target: "${a}" }
${extra}`;

async function withProx(
  text: string,
  fn: (p: ProxServer, file: string) => Promise<void>,
  onDrain?: (target: string, on: boolean) => void,
) {
  const file = await Deno.makeTempFile({ suffix: ".yaml" });
  await Deno.writeTextFile(file, text);
  const server = await startServer({ path: file }, { logger: silentLogger, watch: false, onDrain });
  try {
    await fn(server, file);
  } finally {
    await server.shutdown();
    await Deno.remove(file);
  }
}

/** Who answered `n` requests to `path`: each answer as "status body". */
async function answers(p: ProxServer, path: string, n = 6): Promise<string[]> {
  const out = new Set<string>();
  for (let i = 0; i < n; i++) {
    const res = await fetch(`http://127.0.0.1:${p.port}${path}`);
    out.add(`${res.status} ${await res.text()}`);
  }
  return [...out].sort();
}

Deno.test("admin drain: no new requests for a drained target, its own finish, undrain puts it back", async () => {
  let release = () => {};
  const held = new Promise<void>((r) => release = r);
  await using a = await startUpstream(async (req) => {
    if (new URL(req.url).pathname.endsWith("/slow")) await held;
    return new Response("a");
  });
  await using b = await startUpstream(() => new Response("b"));
  // A failed assertion must not leave the held request keeping the shutdown waiting.
  await withProx(yaml(a.url, b.url), (p) => drainAndBack(p).finally(release));
  async function drainAndBack(p: ProxServer) {
    const admin = `http://127.0.0.1:${p.admin!.port}`;
    const post = (path: string) => fetch(`${admin}${path}`, { method: "POST", headers: auth });
    assert.deepEqual(await answers(p, "/lb"), ["200 a", "200 b"]);
    // A request under way on A (round robin: the next two requests take A and B).
    const slow = [0, 1].map(() => fetch(`http://127.0.0.1:${p.port}/lb/slow`));
    await waitFor(() => p.upstreams.get(a.url).inFlight === 1, { what: "a request on A" });
    const res = await post(`/upstreams/drain?target=${encodeURIComponent(a.url)}`);
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { target: a.url, drained: true, inFlight: 1 });
    assert.deepEqual(await answers(p, "/lb"), ["200 b"]);
    // prox explain (the admin API's) says why A is out.
    const why = await (await fetch(`${admin}/explain?url=http://x/lb`, { headers: auth })).json();
    assert.ok(
      why.notes.includes(`${a.url} is drained (admin API): it takes no new requests`),
      JSON.stringify(why),
    );
    assert.equal(
      why.upstream.targets.find((t: { url: string }) => t.url === a.url).available,
      false,
    );
    // A proxy route's only target drained: 503, even with try_when_down (on by default there).
    const one = await fetch(`http://127.0.0.1:${p.port}/one`);
    assert.equal(one.status, 503);
    await one.body?.cancel();
    // /status shows it drained, with its request still in flight.
    const row = async () =>
      (await (await fetch(`${admin}/status`, { headers: auth })).json()).upstreams
        .find((u: { url: string }) => u.url === a.url);
    assert.deepEqual([(await row()).drained, (await row()).inFlight], [true, 1]);
    release();
    assert.deepEqual((await Promise.all(slow.map((r) => r.then((x) => x.text())))).sort(), [
      "a",
      "b",
    ]);
    assert.equal((await row()).inFlight, 0);
    // Back in rotation.
    const back = await post(`/upstreams/undrain?target=${encodeURIComponent(a.url)}`);
    assert.deepEqual(await back.json(), { target: a.url, drained: false, inFlight: 0 });
    assert.deepEqual(await answers(p, "/lb"), ["200 a", "200 b"]);
    assert.equal((await row()).drained, false);
  }
});

Deno.test("admin drain: a target no route has is 404, none given 400, GET 405, no token 401", async () => {
  await using a = await startUpstream(() => new Response("a"));
  await using b = await startUpstream(() => new Response("b"));
  await withProx(yaml(a.url, b.url), async (p) => {
    const admin = `http://127.0.0.1:${p.admin!.port}`;
    const call = async (path: string, init: RequestInit = { method: "POST", headers: auth }) => {
      const res = await fetch(`${admin}${path}`, init);
      return `${res.status} ${(await res.json()).error ?? ""}`;
    };
    assert.match(
      await call("/upstreams/drain?target=http://10.9.9.9"),
      /^404 Not found: no route has the target "http:\/\/10\.9\.9\.9"/,
    );
    assert.match(await call("/upstreams/drain"), /^400 Bad request: give the target/);
    // The target with a trailing slash the config does not have is the same target.
    const slashed = await fetch(`${admin}/upstreams/drain?target=${a.url}/`, {
      method: "POST",
      headers: auth,
    });
    assert.deepEqual(await slashed.json(), { target: a.url, drained: true, inFlight: 0 });
    const back = await fetch(`${admin}/upstreams/undrain?target=${a.url}/`, {
      method: "POST",
      headers: auth,
    });
    assert.equal((await back.json()).drained, false);
    assert.match(await call("/upstreams/undrain", { headers: auth }), /^405 /);
    assert.match(await call(`/upstreams/drain?target=${a.url}`, { method: "POST" }), /^401 /);
    assert.deepEqual(await answers(p, "/lb"), ["200 a", "200 b"]);
  });
});

Deno.test("admin drain: a reload keeps a drained target drained, and forgets one it removes", async () => {
  await using a = await startUpstream(() => new Response("a"));
  await using b = await startUpstream(() => new Response("b"));
  await withProx(yaml(a.url, b.url), async (p, file) => {
    const admin = `http://127.0.0.1:${p.admin!.port}`;
    await (await fetch(`${admin}/upstreams/drain?target=${a.url}`, {
      method: "POST",
      headers: auth,
    })).body
      ?.cancel();
    await Deno.writeTextFile(file, yaml(a.url, b.url, '  /x: { type: redirect, target: "/lb" }\n'));
    assert.ok((await p.reload()).ok);
    assert.deepEqual(await answers(p, "/lb"), ["200 b"]);
    // Removed from the config, then back: it starts undrained.
    await Deno.writeTextFile(
      file,
      yaml(b.url, b.url).replace(`["${b.url}", "${b.url}"]`, `["${b.url}"]`),
    );
    assert.ok((await p.reload()).ok);
    assert.equal(p.upstreams.drained(a.url), false);
    await Deno.writeTextFile(file, yaml(a.url, b.url));
    assert.ok((await p.reload()).ok);
    assert.deepEqual(await answers(p, "/lb"), ["200 a", "200 b"]);
  });
});

Deno.test("admin drain: a drain the config's change forgets is passed on as an undrain (workers)", async () => {
  await using a = await startUpstream(() => new Response("a"));
  await using b = await startUpstream(() => new Response("b"));
  const told: string[] = [];
  await withProx(yaml(a.url, b.url), async (p, file) => {
    const admin = `http://127.0.0.1:${p.admin!.port}`;
    await (await fetch(`${admin}/upstreams/drain?target=${a.url}`, {
      method: "POST",
      headers: auth,
    })).body?.cancel();
    // Removed: the supervisor must not replay its drain to a worker restarted after it is back.
    await Deno.writeTextFile(
      file,
      yaml(b.url, b.url).replace(`["${b.url}", "${b.url}"]`, `["${b.url}"]`),
    );
    assert.ok((await p.reload()).ok);
    assert.deepEqual(told, [`${a.url} true`, `${a.url} false`]);
  }, (target, on) => told.push(`${target} ${on}`));
});
