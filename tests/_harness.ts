// Shared helpers for integration tests: real servers on 127.0.0.1 port 0, condition waits,
// and interop tests that skip (or fail under PROX_REQUIRE_INTEROP=1) when a tool is missing.

/** A running test server; dispose to shut it down. */
export interface TestServer extends AsyncDisposable {
  port: number;
  url: string;
  server: Deno.HttpServer<Deno.NetAddr>;
}

/** Starts a Deno.serve upstream on 127.0.0.1:0 with the given handler. */
export function startUpstream(
  handler: (
    req: Request,
    info: Deno.ServeHandlerInfo<Deno.NetAddr>,
  ) => Response | Promise<Response>,
  opts: { cert?: string; key?: string; hostname?: string } = {},
): Promise<TestServer> {
  const hostname = opts.hostname ?? "127.0.0.1";
  return new Promise((resolve) => {
    const server = Deno.serve({
      hostname,
      port: 0,
      ...(opts.cert ? { cert: opts.cert, key: opts.key } : {}),
      onListen() {},
    }, handler);
    const port = server.addr.port;
    const scheme = opts.cert ? "https" : "http";
    const host = hostname.includes(":") ? `[${hostname}]` : hostname;
    resolve({
      port,
      url: `${scheme}://${host}:${port}`,
      server,
      async [Symbol.asyncDispose]() {
        await server.shutdown();
      },
    });
  });
}

/** A test server that holds every request until `release()`, counting those that `arrived`. */
export interface HeldUpstream extends TestServer {
  readonly arrived: number;
  /** Lets every held request (and each later one) answer `body`. */
  release(): void;
}

/**
 * Starts an upstream whose answers wait for `release()`: a request in flight, for drains, timeouts
 * and queues. Dispose releases what is still held (a failed assertion cannot hang the shutdown).
 */
export async function startHeldUpstream(body = "late"): Promise<HeldUpstream> {
  const gate = Promise.withResolvers<void>();
  let arrived = 0;
  const up = await startUpstream(async () => {
    arrived++;
    await gate.promise;
    return new Response(body);
  });
  return {
    port: up.port,
    url: up.url,
    server: up.server,
    get arrived() {
      return arrived;
    },
    release: () => gate.resolve(),
    async [Symbol.asyncDispose]() {
      gate.resolve();
      await up[Symbol.asyncDispose]();
    },
  };
}

/** Polls `cond` until it returns a truthy value or `timeoutMs` passes. */
export async function waitFor<T>(
  cond: () => T | Promise<T>,
  opts: { timeoutMs?: number; intervalMs?: number; what?: string } = {},
): Promise<NonNullable<T>> {
  const deadline = Date.now() + (opts.timeoutMs ?? 10_000);
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await cond();
      if (v) return v as NonNullable<T>;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, opts.intervalMs ?? 20));
  }
  throw new Error(`Timed out waiting for ${opts.what ?? "condition"}${last ? `: ${last}` : ""}`);
}

/** Waits until 127.0.0.1:`port` accepts a connection (closed at once): a server listening. */
export async function untilAccepting(
  port: number,
  opts: { timeoutMs?: number; what?: string } = {},
): Promise<void> {
  await waitFor(async () => {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      return true;
    } catch {
      return false;
    }
  }, opts);
}

/** Collects a child's stdout and stderr as they arrive (interleaved); `done` once both ended. */
export function collectOutput(
  child: { stdout: ReadableStream<Uint8Array>; stderr: ReadableStream<Uint8Array> },
): { text(): string; done: Promise<void> } {
  let out = "";
  const dec = new TextDecoder();
  const pump = async (stream: ReadableStream<Uint8Array>) => {
    for await (const chunk of stream) out += dec.decode(chunk, { stream: true });
  };
  const done = Promise.all([pump(child.stdout), pump(child.stderr)]).then(() => {});
  return { text: () => out, done };
}

/** Absolute path of an executable on PATH, or null. */
export function findTool(name: string): string | null {
  const path = Deno.env.get("PATH") ?? "";
  for (const dir of path.split(":")) {
    if (!dir) continue;
    const full = `${dir}/${name}`;
    try {
      const st = Deno.statSync(full);
      if (st.isFile && (st.mode ?? 0o111) & 0o111) return full;
    } catch {
      // not here
    }
  }
  return null;
}

/** True when CI demands every interop tool (a missing tool is then a failure, not a skip). */
export const requireInterop = Deno.env.get("PROX_REQUIRE_INTEROP") === "1";

/**
 * Registers a test that needs external tools. Missing tools: skipped with a message, or a
 * failing test under PROX_REQUIRE_INTEROP=1.
 */
export function interopTest(
  name: string,
  tools: string[],
  fn: (t: Deno.TestContext) => Promise<void> | void,
  opts: { sanitizeOps?: boolean; sanitizeResources?: boolean } = {},
): void {
  const missing = tools.filter((t) => !findTool(t));
  if (missing.length === 0) {
    Deno.test({ name, fn, ...opts });
  } else if (requireInterop) {
    Deno.test(name, () => {
      throw new Error(`Cannot run: missing tool(s) ${missing.join(", ")} (PROX_REQUIRE_INTEROP=1)`);
    });
  } else {
    // deno-lint-ignore no-console
    console.warn(`skip "${name}": missing tool(s) ${missing.join(", ")}`);
    Deno.test({ name, ignore: true, fn });
  }
}

/** Reads a whole stream into a string. */
export async function text(stream: ReadableStream<Uint8Array> | null): Promise<string> {
  if (!stream) return "";
  return await new Response(stream).text();
}

/** Runs a command and returns its exit code and output. */
export async function run(
  cmd: string,
  args: string[],
  opts: { cwd?: string; env?: Record<string, string>; stdin?: string; timeoutMs?: number } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const child = new Deno.Command(cmd, {
    args,
    cwd: opts.cwd,
    env: opts.env,
    stdin: opts.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (opts.stdin !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(opts.stdin));
    await w.close();
  }
  const timer = opts.timeoutMs
    ? setTimeout(() => {
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
    }, opts.timeoutMs)
    : undefined;
  const out = await child.output();
  clearTimeout(timer);
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** Repository root (for spawning mod.ts and reading fixtures). */
export const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");

/**
 * Loads `url` in headless Debian Chromium with a fresh profile and returns the DOM after scripts
 * ran (`--dump-dom`). The flags keep Chromium off the network (this machine has none) and quiet;
 * `extra` adds test-specific ones (QUIC, certificate pins, host rules).
 */
export async function chromiumDumpDom(
  url: string,
  opts: { extra?: string[]; budgetMs?: number; timeoutMs?: number } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const profile = await Deno.makeTempDir({ prefix: "prox-chromium-" });
  try {
    return await run("chromium", [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--disable-domain-reliability",
      "--disable-breakpad",
      "--no-pings",
      "--disable-extensions",
      `--user-data-dir=${profile}`,
      `--virtual-time-budget=${opts.budgetMs ?? 5000}`,
      ...(opts.extra ?? []),
      "--dump-dom",
      url,
    ], { timeoutMs: opts.timeoutMs ?? 60_000 });
  } finally {
    await Deno.remove(profile, { recursive: true });
  }
}

/**
 * A TCP port free on 127.0.0.1 now, for tests that must know the port before Prox binds it
 * (workers, takeovers, ACME's HTTP port). Picked below Linux's ephemeral range (32768–60999):
 * a port from `listen(0)` is an ephemeral one, which an outgoing connection (pebble's, a client's)
 * could take before Prox binds it ("Address already in use").
 */
export function freePort(): number {
  for (let i = 0; i < 100; i++) {
    const port = 20_000 + Math.floor(Math.random() * 12_000);
    try {
      Deno.listen({ hostname: "127.0.0.1", port }).close();
      return port;
    } catch { /* taken: try another */ }
  }
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** A small deterministic PRNG (mulberry32): a run that fails replays from its seed. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
