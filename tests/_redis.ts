// Starts a throwaway redis-server (Debian package `redis-server`) on a free 127.0.0.1 port,
// without persistence, for tests that need a real shared store.

import { freePort, waitFor } from "./_harness.ts";

/** A running redis-server; dispose to stop it. */
export interface TestRedis extends AsyncDisposable {
  port: number;
  url: string;
  /** Stops (SIGSTOP) or resumes (SIGCONT) the server: connections stay open, nothing answers. */
  pause(paused: boolean): void;
}

async function ping(port: number): Promise<boolean> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await conn.write(new TextEncoder().encode("PING\r\n"));
    const buf = new Uint8Array(16);
    const n = await conn.read(buf);
    // A server with --requirepass answers before AUTH that it wants one: it is up.
    return /^(\+PONG|-NOAUTH)/.test(new TextDecoder().decode(buf.subarray(0, n ?? 0)));
  } finally {
    conn.close();
  }
}

/** Starts redis-server (on `port`, else a free one, with `args` added) and waits until it answers PING. */
export async function startRedis(
  opts: { port?: number; args?: string[] } = {},
): Promise<TestRedis> {
  const port = opts.port ?? freePort();
  // Its working directory, where a replica writes the RDB it syncs (dump.rdb), whatever --save says.
  const dir = await Deno.makeTempDir({ prefix: "prox-redis-" });
  const child = new Deno.Command("redis-server", {
    args: [
      ...["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
      ...opts.args ?? [],
    ],
    cwd: dir,
    stdout: "null",
    stderr: "null",
  }).spawn();
  try {
    await waitFor(() => ping(port), { what: `redis-server on port ${port}` });
  } catch (err) {
    child.kill("SIGKILL");
    await child.status;
    await Deno.remove(dir, { recursive: true });
    throw err;
  }
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    pause: (paused) => child.kill(paused ? "SIGSTOP" : "SIGCONT"),
    async [Symbol.asyncDispose]() {
      try {
        child.kill("SIGCONT"); // a paused server would not act on SIGTERM
        child.kill("SIGTERM");
      } catch { /* already gone */ }
      await child.status;
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}

/**
 * A TCP relay to `port` whose `blackhole()` makes the connections open now swallow every byte
 * while staying open, as a half-open connection or a dropped NAT entry does; new ones relay.
 * `retarget` sends new connections to another port (a failover behind one address).
 */
export function startRelay(port: number) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns = new Set<Deno.Conn>();
  const pairs: { dead: boolean }[] = [];
  const pump = async (from: Deno.Conn, to: Deno.Conn, pair: { dead: boolean }) => {
    const buf = new Uint8Array(16_384);
    try {
      for (let n; (n = await from.read(buf)) !== null;) {
        if (!pair.dead) await to.write(buf.subarray(0, n));
      }
    } catch { /* closed */ }
  };
  const tasks: Promise<void>[] = [];
  const accepting = (async () => {
    for await (const client of listener) {
      const server = await Deno.connect({ hostname: "127.0.0.1", port });
      conns.add(client).add(server);
      const pair = { dead: false };
      pairs.push(pair);
      tasks.push(pump(client, server, pair), pump(server, client, pair));
    }
  })();
  return {
    url: `redis://127.0.0.1:${(listener.addr as Deno.NetAddr).port}`,
    blackhole: () => pairs.forEach((p) => p.dead = true),
    retarget: (to: number) => port = to,
    /** Closes every connection open now (a Redis host that went away). */
    cut: () => {
      for (const c of conns) {
        try {
          c.close();
        } catch { /* closed */ }
      }
      conns.clear();
    },
    async [Symbol.asyncDispose]() {
      listener.close();
      await accepting;
      for (const c of conns) {
        try {
          c.close();
        } catch { /* closed */ }
      }
      await Promise.all(tasks);
    },
  };
}
