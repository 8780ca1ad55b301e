// `prox proxy` and `prox static` as users run them: real child processes, no config file, real
// requests; SIGTERM stops them cleanly; `--print-config` gives a config that validates.
import assert from "node:assert/strict";
import { collectOutput, freePort, ROOT, run, startUpstream, untilAccepting } from "../_harness.ts";
import { V8_FLAGS } from "./_process.ts";
import { loadConfigText } from "../../src/config/load.ts";
import { quickConfig } from "../../src/cli_quick.ts";

/** Runs `prox <args>` until it listens on `port`; dispose sends SIGTERM and checks exit 0. */
async function prox(args: string[], port: number) {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", V8_FLAGS, `--config=${ROOT}/deno.json`, `${ROOT}/mod.ts`, ...args],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const out = collectOutput(child);
  await untilAccepting(port, {
    timeoutMs: 20_000,
    what: `prox ${args[0]} on ${port}: ${out.text()}`,
  });
  return {
    output: out.text,
    async [Symbol.asyncDispose]() {
      child.kill("SIGTERM");
      const status = await child.status;
      await out.done;
      assert.equal(status.code, 0, out.text());
    },
  };
}

Deno.test("prox static DIR --from PORT serves the directory, with --spa its index for the rest", async () => {
  const dir = await Deno.makeTempDir();
  await Deno.writeTextFile(`${dir}/index.html`, "<h1>home</h1>");
  await Deno.writeTextFile(`${dir}/app.js`, "console.log(1)");
  const port = freePort();
  {
    await using _p = await prox(["static", dir, "--from", String(port), "--spa"], port);
    const js = await fetch(`http://127.0.0.1:${port}/app.js`);
    assert.equal(await js.text(), "console.log(1)");
    const deep = await fetch(`http://127.0.0.1:${port}/some/page`);
    assert.equal(deep.status, 200);
    assert.equal(await deep.text(), "<h1>home</h1>");
  }
  await Deno.remove(dir, { recursive: true });
});

Deno.test("prox proxy --to forwards, keeping the query; several --to take turns", async () => {
  const ups = await Promise.all(
    ["a", "b"].map((name) =>
      startUpstream((req) => new Response(`${name} ${new URL(req.url).search}`))
    ),
  );
  try {
    const port = freePort();
    {
      await using _p = await prox(
        ["proxy", "--to", String(ups[0].port), "--from", String(port)],
        port,
      );
      assert.equal(await (await fetch(`http://127.0.0.1:${port}/x?q=1`)).text(), "a ?q=1");
    }
    const port2 = freePort();
    {
      await using _p = await prox(
        ["proxy", "--to", ups[0].url, "--to", `127.0.0.1:${ups[1].port}`, "--from", String(port2)],
        port2,
      );
      const seen = new Set<string>();
      for (let i = 0; i < 4; i++) {
        seen.add((await (await fetch(`http://127.0.0.1:${port2}/`)).text()).split(" ")[0]);
      }
      assert.deepEqual([...seen].sort(), ["a", "b"]);
    }
  } finally {
    for (const u of ups) await u[Symbol.asyncDispose]();
  }
});

Deno.test("prox proxy/static: --print-config gives a valid config; usage errors exit 2", async () => {
  for (
    const a of [
      { command: "proxy" as const, rest: [], to: ["3000"], preserveHost: true },
      { command: "proxy" as const, rest: [], to: ["unix:/run/a.sock", "https://b:8443"] },
      { command: "static" as const, rest: ["./dist"], from: ":80", spa: true },
    ]
  ) {
    const made = quickConfig(a);
    assert.ok("text" in made);
    const loaded = loadConfigText(made.text, { file: "q.yaml", env: { exists: () => true } });
    assert.deepEqual(loaded.issues.filter((i) => i.severity === "error"), [], made.text);
  }
  const cli = (args: string[]) =>
    run(Deno.execPath(), ["run", "-A", `--config=${ROOT}/deno.json`, `${ROOT}/mod.ts`, ...args]);
  const printed = await cli(["proxy", "--to", "3000", "--print-config"]);
  assert.equal(printed.code, 0);
  assert.match(printed.stdout, /target: "http:\/\/127\.0\.0\.1:3000"/);
  assert.equal((await cli(["proxy"])).code, 2);
  assert.equal((await cli(["static", "--to", "3000"])).code, 2);
  assert.equal((await cli(["proxy", "-c", "x.yaml", "--to", "1"])).code, 2);
});

Deno.test("prox help proxy/static: lines fit a 100-column terminal", async () => {
  const { COMMAND_HELP } = await import("../../src/cli_text.ts");
  for (const command of ["proxy", "static"] as const) {
    const help = (COMMAND_HELP as Record<string, string>)[command];
    for (const line of help.split("\n")) assert.ok(line.length <= 100, `${command}: ${line}`);
  }
});
