// The CLI process with a wss upstream trusted through DENO_CERT (the process-wide trust that the
// default, pausable upstream client uses), and SIGTERM closing live WebSockets with 1001.

import assert from "node:assert/strict";
import { ROOT, waitFor } from "../_harness.ts";
import { freePort } from "./_cli_process.ts";
import { closed, connect, messages, wssUpstream } from "./_ws.ts";

const TLS = `${ROOT}/tests/fixtures/tls`;

Deno.test("prox serve: wss upstream trusted via DENO_CERT, SIGTERM closes WebSockets with 1001", async () => {
  await using up = await wssUpstream({
    cert: Deno.readTextFileSync(`${TLS}/cert.pem`),
    key: Deno.readTextFileSync(`${TLS}/key.pem`),
  });
  const port = freePort();
  const dir = await Deno.makeTempDir({ prefix: "prox-ws-cli-" });
  await Deno.writeTextFile(
    `${dir}/prox.yaml`,
    `listen_addr: "127.0.0.1:${port}"
health_check: { enabled: false }
routes:
  "/ws":
    type: websocket
    target: "${up.url}"
`,
  );
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--config",
      `${ROOT}/deno.json`,
      `${ROOT}/mod.ts`,
      "serve",
      "-c",
      "prox.yaml",
    ],
    cwd: dir,
    env: { NO_COLOR: "1", DENO_CERT: `${TLS}/ca.pem` },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const output = Promise.all([
    new Response(child.stdout).text(),
    new Response(child.stderr).text(),
  ]);
  try {
    const ws = await waitFor(() => connect(`ws://127.0.0.1:${port}/ws`), {
      timeoutMs: 15_000,
      what: "Prox to accept a WebSocket",
    });
    const c = closed(ws);
    const got = messages(ws, 1);
    ws.send("through the CLI");
    // An untrusted upstream certificate would close the client with 1014 instead.
    const first = await Promise.race([got, c]);
    assert.ok(Array.isArray(first), `closed early: ${JSON.stringify(first)}`);
    assert.equal(first[0].data.toString(), "through the CLI");
    child.kill("SIGTERM");
    assert.deepEqual(await c, { code: 1001, reason: "Server shutting down" });
    const status = await child.status;
    const [out, err] = await output;
    assert.equal(status.code, 0, out + err);
  } finally {
    try {
      child.kill("SIGKILL");
    } catch { /* exited */ }
    await child.status;
    await output;
    await Deno.remove(dir, { recursive: true });
  }
});
