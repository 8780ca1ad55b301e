// `prox top` against a real Prox: traffic is sent between its two polls (a relay in front of the
// admin listener says when the first one has been answered), and the figures must match it.
import assert from "node:assert/strict";
import { freePort, ROOT, run, startUpstream, waitFor } from "../_harness.ts";
import { startServer } from "../../src/server.ts";
import { silentLogger } from "../../src/ports.ts";
import { spawnProx } from "./_cli_process.ts";

const TOKEN = "top-secret-token";

const top = (args: string[], env: Record<string, string> = {}) =>
  run(Deno.execPath(), [
    "run",
    "-A",
    "--config",
    `${ROOT}/deno.json`,
    `${ROOT}/mod.ts`,
    "top",
    ...args,
  ], {
    env: { NO_COLOR: "1", ...env },
    timeoutMs: 30_000,
  });

Deno.test("prox top --once: per-route counts, classes and health match the traffic sent", async () => {
  await using up = await startUpstream((req) =>
    new URL(req.url).pathname.endsWith("/missing")
      ? new Response("no", { status: 404 })
      : new Response("ok")
  );
  const file = await Deno.makeTempFile({ suffix: ".yaml" });
  await Deno.writeTextFile(
    file,
    `listen_addr: "127.0.0.1:0"
admin: { listen_addr: "127.0.0.1:0", token: "${TOKEN}" }
health_check: { enabled: false }
routes:
  "/api": { type: proxy, target: "${up.url}" }
  "/web": { type: proxy, target: "${up.url}" }
  "/lim":
    type: proxy
    target: "${up.url}"
    rate_limit: { by: ip, requests: 2, period: 1m }
`,
  );
  const prox = await startServer({ path: file }, { logger: silentLogger, version: "test" });
  const admin = `http://127.0.0.1:${prox.admin!.port}`;
  // Answers /metrics and /status from the admin listener and counts the answers it relayed.
  const answered = { metrics: 0, status: 0 };
  let failing = false; // the admin listener "restarting"
  await using relay = await startUpstream(async (req) => {
    const path = new URL(req.url).pathname;
    if (failing) return new Response("restarting", { status: 503 });
    const res = await fetch(`${admin}${path}`, { headers: req.headers });
    const body = await res.text();
    if (path === "/metrics") answered.metrics++;
    if (path === "/status") answered.status++;
    return new Response(body, {
      status: res.status,
      headers: { "content-type": res.headers.get("content-type") ?? "text/plain" },
    });
  });
  const send = async (path: string, n: number) => {
    for (let i = 0; i < n; i++) await (await fetch(`http://127.0.0.1:${prox.port}${path}`)).text();
  };
  // Between the two polls of `top`: 7 to /api, 3 (404) to /web, 5 to /lim (2 pass, 3 get 429).
  const traffic = async (runTop: Promise<{ code: number; stdout: string; stderr: string }>) => {
    const base = answered.metrics;
    await waitFor(() => answered.metrics > base && answered.status > base, { what: "first poll" });
    await send("/api/x", 7);
    await send("/web/missing", 3);
    await send("/lim/x", 5);
    return await runTop;
  };
  try {
    await send("/api/before", 4); // before the first poll: not in the figures
    const json = await traffic(
      top(["--admin", relay.url, "--once", "--interval", "3s", "--format", "json"], {
        PROX_ADMIN_TOKEN: TOKEN,
      }),
    );
    assert.equal(json.code, 0, json.stderr);
    const snap = JSON.parse(json.stdout);
    const byRoute = Object.fromEntries(
      snap.routes.map((r: { route: string; requests: number }) => [r.route, r]),
    );
    assert.equal(byRoute["/api"].requests, 7);
    assert.equal(byRoute["/web"].requests, 3);
    assert.equal(byRoute["/lim"].requests, 5);
    assert.equal(snap.total.requests, 15);
    const count = (perSecond: number) => Math.round(perSecond * snap.intervalSeconds);
    assert.equal(count(byRoute["/web"].classes["4xx"]), 3);
    assert.equal(count(byRoute["/lim"].classes["4xx"]), 3);
    assert.equal(count(byRoute["/lim"].rateLimited), 3);
    assert.equal(count(byRoute["/api"].classes["2xx"]), 7);
    assert.equal(snap.routes[0].route, "/api"); // busiest first
    assert.ok(byRoute["/api"].p50Ms > 0 && byRoute["/api"].p95Ms >= byRoute["/api"].p50Ms);
    assert.equal(snap.config.version, 1);
    assert.deepEqual(
      snap.upstreams.map((u: { url: string; healthy: boolean }) => [u.url, u.healthy]),
      [
        [up.url, true],
      ],
    );
    assert.equal(count(snap.upstreams[0].perSecond), 12); // /lim's 429s never went upstream
    assert.match(snap.note, /estimate/);

    // The text screen, the token taken from the config named with -c.
    const text = await traffic(
      top(["-c", file, "--admin", relay.url, "--once", "--interval", "3s"]),
    );
    assert.equal(text.code, 0, text.stderr);
    const lines = text.stdout.split("\n");
    assert.match(lines[0], /^prox test {2}pid \d+ {2}up \d+s {2}config v1 {2}ready$/);
    assert.ok(
      lines.some((l) => /^ROUTE +REQ\/S +2XX +3XX +4XX +5XX +P50~ +P95~ +LIMITED$/.test(l)),
    );
    const row = (route: string) => lines.find((l) => l.startsWith(`${route} `))!.trim().split(/ +/);
    assert.equal(
      lines.indexOf(lines.find((l) => l.startsWith("/api "))!) <
        lines.indexOf(lines.find((l) => l.startsWith("/lim "))!),
      true,
    );
    assert.equal(row("/web")[2], "0"); // no 2xx on /web
    assert.notEqual(row("/web")[4], "0"); // its 404s
    assert.ok(lines.some((l) => l.startsWith(up.url) && / up /.test(l)));
    assert.ok(!text.stdout.includes("\x1b["));
    for (const l of lines) assert.ok(l.length <= 100, l); // not a terminal: 100 columns

    // -c alone: the admin address and token come from the config (port 0 there: not usable).
    const own = `${file}.own.yaml`;
    await Deno.writeTextFile(
      own,
      (await Deno.readTextFile(file)).replace(
        `listen_addr: "127.0.0.1:0", token`,
        `listen_addr: "127.0.0.1:${prox.admin!.port}", token`,
      ),
    );
    const fromConfig = await top(["-c", own, "--once", "--interval", "100ms", "--json"]);
    await Deno.remove(own);
    assert.equal(fromConfig.code, 0, fromConfig.stderr);
    assert.equal(JSON.parse(fromConfig.stdout).config.version, 1);

    // Live (no --once): one compact JSON object per interval; a failed poll is said on stderr and
    // polling goes on (a restart or upgrade of Prox does not end the view).
    await using live = spawnProx(
      ["top", "--admin", relay.url, "--interval", "200ms", "--format", "json"],
      { env: { PROX_ADMIN_TOKEN: TOKEN } },
    );
    const objects = () => live.output().split("\n").filter((l) => l.startsWith("{")).length;
    await live.waitForOutput(() => objects() >= 1);
    failing = true;
    await live.waitForOutput("answered 503 for /metrics (retrying)");
    const seen = objects();
    failing = false;
    await live.waitForOutput(() => objects() >= seen + 1);
    assert.equal(
      JSON.parse(live.output().split("\n").findLast((l) => l.startsWith("{"))!).pid,
      Deno.pid,
    );

    // Errors: wrong token, nothing listening, not Prox.
    const wrong = await top(["--admin", admin, "--token", "nope", "--once", "--interval", "100ms"]);
    assert.equal(wrong.code, 1);
    assert.match(
      wrong.stderr,
      /answered 401: the token is wrong\. Pass --token, set PROX_ADMIN_TOKEN/,
    );
    const port = freePort();
    const down = await top(["--admin", `127.0.0.1:${port}`, "--once"]);
    assert.equal(down.code, 1);
    assert.match(
      down.stderr,
      new RegExp(
        `Cannot reach the Prox admin listener at http://127\\.0\\.0\\.1:${port}: connection refused.*admin: \\{ listen_addr`,
      ),
    );
    const notProx = await top(["--admin", up.url, "--once"]);
    assert.equal(notProx.code, 1);
    assert.match(
      notProx.stderr,
      new RegExp(`${up.url} is not a Prox admin listener: /metrics has no prox_build_info`),
    );
    const help = await top(["--help"]);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /^Usage: prox top [^]*estimates[^]*PROX_ADMIN_TOKEN/);
    const usage = await top(["--admin", admin, "--interval", "fast"]);
    assert.equal(usage.code, 2);
    assert.match(usage.stderr, /--interval must be a duration/);
  } finally {
    await prox.shutdown();
    await Deno.remove(file);
  }
});
