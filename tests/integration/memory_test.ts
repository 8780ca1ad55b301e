// Memory after a burst: a real Prox process (run with --expose-gc, as shipped) returns the
// garbage of a many-connection burst (or of many WebSocket messages) to the OS once traffic
// stops, instead of idling at its peak.
import assert from "node:assert/strict";
import { interopTest, run, startUpstream, waitFor } from "../_harness.ts";
import { spawnProx } from "./_process.ts";
import { closed, connect, messages, wsUpstream } from "./_ws.ts";

const MiB = 1024 * 1024;

/** A Prox with `memory` settings in front of a 100-byte upstream, after `n` requests over `c`. */
async function afterBurst(memory: string, n: number, c: number) {
  const body = new Uint8Array(100);
  const up = await startUpstream(() => new Response(body));
  const config = `listen_addr: "127.0.0.1:{PORT}"
health_check: { enabled: false }
log: { access_log: false }
memory: ${memory}
routes: { "/": { type: proxy, target: "${up.url}" } }
`;
  let prox: Awaited<ReturnType<typeof spawnProx>>;
  try {
    prox = await spawnProx(config, { env: { PROX_LOG_LEVEL: "debug" } });
  } catch (err) {
    await up[Symbol.asyncDispose]();
    throw err;
  }
  const dispose = async () => {
    await prox[Symbol.asyncDispose]();
    await up[Symbol.asyncDispose]();
  };
  try {
    const out = await run("h2load", [
      "--h1",
      "-n",
      String(n),
      "-c",
      String(c),
      `http://127.0.0.1:${prox.port}/`,
    ], { timeoutMs: 120_000 });
    assert.match(out.stdout, new RegExp(`${n} succeeded`), out.stdout + out.stderr);
  } catch (err) {
    await dispose();
    throw err;
  }
  return { prox, [Symbol.asyncDispose]: dispose };
}

interopTest(
  "after a burst of 500 connections and memory.reduce_after_idle of quiet, Prox runs one memory-reducing GC and RSS falls (RSS above memory.reduce_above)",
  ["h2load"],
  async () => {
    await using burst = await afterBurst(
      "{ reduce_after_idle: 5s, reduce_above: 64MiB }",
      30000,
      500,
    );
    const prox = burst.prox;
    const burstEnd = Date.now();
    const reduced = () =>
      prox.output().split("\n").find((l) => l.includes("Memory-reducing GC after a burst"));
    await waitFor(() => reduced() !== undefined, {
      timeoutMs: 20_000,
      what: "the memory-reducing GC once traffic stopped",
    });
    // The idle check runs every second and needs 5 s without requests: the GC comes 5–6 s after
    // the last request (with the 1 s default it would come after 1–2 s). The margins allow for a
    // slow machine between the last response and h2load's exit.
    const after = Date.parse(JSON.parse(reduced()!).time) - burstEnd;
    assert.ok(after >= 3500 && after < 12_000, `GC ${after} ms after the burst`);
    const { peak, rss } = prox.memory();
    // deno-lint-ignore no-console
    console.log(
      `prox RSS: peak ${(peak / MiB).toFixed(1)} MiB, after the burst ${
        (rss / MiB).toFixed(1)
      } MiB`,
    );
    // deno-lint-ignore no-console
    console.log(reduced());
    assert.ok(rss < 0.85 * peak, `RSS ${rss} after the burst, peak ${peak}`);
  },
);

interopTest(
  "after a burst that leaves RSS below memory.reduce_above, Prox keeps the memory (no GC)",
  ["h2load"],
  async () => {
    await using burst = await afterBurst("{ reduce_after_idle: 1s, reduce_above: 4GiB }", 3000, 10);
    const prox = burst.prox;
    await waitFor(() => prox.output().includes("Memory kept after a burst"), {
      timeoutMs: 10_000,
      what: "the reducer's decision to keep the memory",
    });
    assert.ok(!prox.output().includes("Memory-reducing GC after a burst"), prox.output());
  },
);

Deno.test("a burst of WebSocket messages on one session also leads to the memory-reducing GC", async () => {
  await using up = await wsUpstream();
  // With V8's own memory reducer off (--no-memory-reducer), nothing else would ever return the
  // memory of a process that only relays WebSockets: its one upgrade request is not a burst.
  await using prox = await spawnProx(
    `listen_addr: "127.0.0.1:{PORT}"
health_check: { enabled: false }
log: { access_log: false }
memory: { reduce_after_idle: 1s, reduce_above: 1MiB }
routes: { "/ws": { type: websocket, target: "${up.url}" } }
`,
    { env: { PROX_LOG_LEVEL: "debug" } },
  );
  const ws = await connect(`ws://127.0.0.1:${prox.port}/ws`);
  try {
    // 1,500 echoed messages: 3,000 relayed, over the reducer's burst of 2,000.
    const echoed = messages(ws, 1500);
    for (let i = 0; i < 1500; i++) ws.send(`message ${i}`);
    assert.equal((await echoed).length, 1500);
    await waitFor(() => prox.output().includes("Memory-reducing GC after a burst"), {
      timeoutMs: 10_000,
      what: "the memory-reducing GC once the messages stopped",
    });
  } finally {
    const done = closed(ws);
    ws.close();
    await done;
  }
});

interopTest(
  "after a burst of a crowd (300 connections at once), Prox reduces the memory even below memory.reduce_above",
  ["h2load"],
  async () => {
    // Its objects outlived scavenges whatever RSS it reached (gc_hint.ts, CROWD).
    await using burst = await afterBurst(
      "{ reduce_after_idle: 1s, reduce_above: 4GiB }",
      30000,
      300,
    );
    const prox = burst.prox;
    await waitFor(() => prox.output().includes("Memory-reducing GC after a burst"), {
      timeoutMs: 10_000,
      what: "the memory-reducing GC once the crowd's traffic stopped",
    });
    assert.ok(!prox.output().includes("Memory kept after a burst"), prox.output());
  },
);
