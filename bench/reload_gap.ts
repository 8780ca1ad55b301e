// deno-lint-ignore-file no-console
// How long a reload of a large config keeps Prox from answering: generates a config of ROUTES
// routes (header rules with conditions, conditional `match` routes), times each phase of a load
// in this process (read, YAML parse + schema, cross-field validation, snapshot build), then
// starts `prox serve` on it, sends a steady trickle of requests (one every 5 ms, each on its own
// connection, to a route that answers itself) while SIGHUP reloads it, and reports the longest gap
// between answers around the reload, and without one for as long.
//
//   deno run -A bench/reload_gap.ts [ROUTES=5000] [RELOADS=3]

import { parseConfig } from "../src/config/parse.ts";
import { validateConfig } from "../src/config/validate.ts";
import { denoEnv, readConfigBytes } from "../src/adapters/config_source.ts";
import { buildSnapshot } from "../src/proxy/snapshot.ts";
import { serveArgs } from "../tests/integration/_process.ts";
import { freePort, waitFor } from "../tests/_harness.ts";

/** A config of `routes` routes, each with header rules and conditions, every 4th conditional. */
export function largeConfig(routes: number, port: number): string {
  const lines = [
    `listen_addr: "127.0.0.1:${port}"`,
    "health_check: { enabled: false }",
    "routes:",
    `  "/ping":`,
    "    type: respond",
    "    status: 200",
    "    body: pong",
  ];
  for (let i = 0; i < routes; i++) {
    lines.push(
      `  "/svc-${i}/api":`,
      "    type: proxy",
      `    target: "http://10.${(i >> 8) & 255}.${i & 255}.1:8080"`,
      "    timeouts: { connect: 2s, response_header: 15s }",
      "    request_headers:",
      `      set: { "X-Service": "svc-${i}", "X-Request-Start": "{timestamp}" }`,
      "      remove: [X-Internal-Debug]",
      `      condition: { path_matches: "^/svc-${i}/api/v[0-9]+/", method_is: [GET, POST, PUT] }`,
      "    response_headers:",
      `      condition: { status_is: "5xx" }`,
      `      set: { "Cache-Control": "no-store", "X-Served-By": "svc-${i}" }`,
    );
    if (i % 4 === 0) {
      lines.push(
        `  "/svc-${i}/api#canary":`,
        "    type: proxy",
        `    target: "http://10.${(i >> 8) & 255}.${i & 255}.2:8080"`,
        "    match:",
        `      - { has_header: { name: Cookie, value_matches: "(^|; )canary=1(;|$)" } }`,
        "      - { method_is: [GET, HEAD] }",
      );
    }
  }
  return lines.join("\n") + "\n";
}

/** Milliseconds `f` took, and its result. */
async function timed<T>(f: () => T | Promise<T>): Promise<[number, T]> {
  const t0 = performance.now();
  const v = await f();
  return [performance.now() - t0, v];
}

/** Times each phase of one load of `file` in this process. */
async function phases(file: string): Promise<void> {
  const [read, bytes] = await timed(() => readConfigBytes(file));
  const text = new TextDecoder().decode(bytes);
  const [parse, parsed] = await timed(() => parseConfig(text, file));
  if (!parsed.config) throw new Error(parsed.issues.map((i) => i.message).join("\n"));
  const [validate, issues] = await timed(() =>
    validateConfig(parsed.config!, parsed, { file, env: denoEnv })
  );
  const errors = issues.filter((i) => i.severity === "error");
  if (errors.length) throw new Error(errors.map((i) => i.message).join("\n"));
  const [build] = await timed(() =>
    buildSnapshot(parsed.config!, { version: 1, files: new Map(), env: denoEnv.env })
  );
  console.log(
    `phases: read ${read.toFixed(1)} ms, YAML parse + schema ${parse.toFixed(0)} ms, ` +
      `validate ${validate.toFixed(0)} ms, snapshot build ${build.toFixed(0)} ms`,
  );
}

/** Longest gap between answers of a trickle of requests while `during` runs. */
async function longestGap(port: number, during: () => Promise<void>): Promise<number> {
  let last = performance.now();
  let gap = 0;
  let running = true;
  const trickle = (async () => {
    while (running) {
      const res = await fetch(`http://127.0.0.1:${port}/ping`);
      await res.body?.cancel();
      const now = performance.now();
      gap = Math.max(gap, now - last);
      last = now;
      await new Promise((r) => setTimeout(r, 5));
    }
  })();
  await new Promise((r) => setTimeout(r, 200));
  await during();
  await new Promise((r) => setTimeout(r, 200));
  running = false;
  await trickle;
  return gap;
}

if (import.meta.main) {
  const routes = Number(Deno.args[0] ?? 5000);
  const reloads = Number(Deno.args[1] ?? 3);
  const port = freePort();
  const dir = await Deno.makeTempDir({ prefix: "prox-reload-gap-" });
  const file = `${dir}/config.yaml`;
  const yaml = largeConfig(routes, port);
  await Deno.writeTextFile(file, yaml);
  console.log(`config: ${routes} routes, ${(yaml.length / 1024 / 1024).toFixed(2)} MiB`);
  await phases(file);
  await phases(file); // warm
  const child = new Deno.Command(Deno.execPath(), {
    args: serveArgs(file, ["--no-watch"]),
    cwd: dir,
    env: { PROX_LOG_LEVEL: "info" },
    stdout: "piped",
    stderr: "null",
  }).spawn();
  let out = "";
  const pump = (async () => {
    const dec = new TextDecoder();
    for await (const chunk of child.stdout) out += dec.decode(chunk, { stream: true });
  })();
  try {
    await waitFor(() => fetch(`http://127.0.0.1:${port}/ping`).then((r) => r.text()), {
      timeoutMs: 120_000,
      what: "prox to listen",
    });
    for (let i = 0; i < reloads; i++) {
      const seen = (out.match(/Config reloaded/g) ?? []).length;
      const t0 = performance.now();
      let took = 0;
      const gap = await longestGap(port, async () => {
        child.kill("SIGHUP");
        await waitFor(() => (out.match(/Config reloaded/g) ?? []).length > seen, {
          timeoutMs: 120_000,
          intervalMs: 5,
          what: "the reload",
        });
        took = performance.now() - t0;
      });
      // The same trickle for as long without a reload: what the machine's load alone costs.
      const idle = await longestGap(port, () => new Promise((r) => setTimeout(r, took)));
      console.log(
        `reload ${i + 1}: took ${took.toFixed(0)} ms, longest gap between answers ${
          gap.toFixed(0)
        } ms (${idle.toFixed(0)} ms without a reload)`,
      );
    }
  } finally {
    child.kill("SIGTERM");
    await child.status;
    await pump;
    await Deno.remove(dir, { recursive: true });
  }
}
