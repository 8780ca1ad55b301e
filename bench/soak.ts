// deno-lint-ignore-file no-console
// Soak test for leaks: `deno run -A bench/soak.ts [--minutes 10] [--rps 150] [--engine]`.
// Runs a real Prox (the shipped V8 flags, plus --inspect on a free port) with every route type
// (proxy, load_balance with health checks, static, redirect, websocket, a host route; a TLS
// upstream, and an https target that does not speak TLS), header and body rules, memory rate
// limits with rotating keys, the admin listener, the JSON access log and TLS with h2 and HTTP/3.
// It drives moderate mixed traffic: fetch over HTTP/1.1 and HTTP/2 with random paths, queries,
// Host values and cookies, POSTs (some aborted mid-body), downloads aborted after the first
// chunk, WebSockets opened and closed, TLS connections dropped mid-request, h2load, gtlsclient
// (h3) and curl when installed, two upstreams that go away and come back, a dead one, a config
// reload every 10–18 s (routes and targets added and removed, HTTP/3 and health checks toggled)
// and admin scrapes. Every 30 s, and four times in the minute after traffic stops, it prints
// Prox's RSS, open fds, Prometheus series and the sizes of every Map and Set in its heap
// (through the inspector: `Runtime.queryObjects`). Growth that does not level off is a leak.
//
// `--engine` also runs a second Prox with the same routes and reloads on a plain-HTTP listener
// on Prox's own HTTP/1.1 engine (`protocols.http1_engine: prox`; every sixth config puts it back
// on Deno.serve, so the engine's listener is replaced and drained), and sends it half of the
// fetch traffic (GETs and small POSTs it serves itself; chunked, large and abandoned bodies and
// h2c with prior knowledge, which it relays), WebSockets, raw clients (soak_engine.ts: pipelined,
// keep-alive, late bodies, Expect, HTTP/1.0, odd and slow heads, clients leaving mid-head,
// mid-body, mid-answer and while waiting) and curl, nghttp and h2load over h2c. Its report lines
// add the engine's own figures from the admin `/status` (requests served, connections relayed).

import { parseArgs } from "node:util";
import { findTool, freePort, ROOT } from "../tests/_harness.ts";
import { V8_FLAGS } from "../tests/integration/_process.ts";
import { engineClient } from "./soak_engine.ts";
import { connectInspector } from "./inspector.ts";
import type { Inspector } from "./inspector.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    minutes: { type: "string", default: "10" },
    rps: { type: "string", default: "150" },
    engine: { type: "boolean", default: false },
  },
});
const minutes = Number(values.minutes);
const engineMode = values.engine;
const WORKERS = 8;
const gapMs = (1000 * WORKERS) / Number(values.rps);
const ca = Deno.readTextFileSync(`${ROOT}/tests/fixtures/tls/ca.pem`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const rnd = (n: number) => Math.floor(Math.random() * n);
const stats: Record<string, number> = {}; // engine-bound ones under "e:…"
const tally = (k: string) => void (stats[k] = (stats[k] ?? 0) + 1);
const count = tally;

// ---- Upstreams: echo, health, 1 MiB, 503, slow, WebSocket echo.
const big = new Uint8Array(1 << 20);
async function upstream(req: Request): Promise<Response> {
  const path = new URL(req.url).pathname;
  if (req.headers.get("upgrade")?.toLowerCase() === "websocket") {
    const { socket, response } = Deno.upgradeWebSocket(req);
    socket.onmessage = (e) => socket.readyState === WebSocket.OPEN && socket.send(e.data);
    return response;
  }
  if (path.endsWith("/health")) return new Response("ok");
  if (path.includes("/big")) return new Response(big);
  if (path.includes("/fail")) return new Response("nope", { status: 503 });
  if (path.includes("/slow")) await sleep(200 + rnd(500));
  const got = req.body ? (await req.arrayBuffer().catch(() => new ArrayBuffer(0))).byteLength : 0;
  return new Response(`${path} ${got}`);
}
type Up = { port: number; server?: Deno.HttpServer };
const serve = (u: Up) =>
  u.server = Deno.serve({ hostname: "127.0.0.1", port: u.port, onListen() {} }, upstream);
const stable: Up[] = [{ port: freePort() }, { port: freePort() }];
const flapping: Up[] = [{ port: freePort() }, { port: freePort() }];
const dead = `http://127.0.0.1:${freePort()}`;
for (const u of [...stable, ...flapping]) serve(u);
// A TLS upstream (the test CA's certificate) and an https target that speaks plain HTTP.
const tlsUp = Deno.serve({
  hostname: "127.0.0.1",
  port: 0,
  cert: Deno.readTextFileSync(`${ROOT}/tests/fixtures/tls/cert.pem`),
  key: Deno.readTextFileSync(`${ROOT}/tests/fixtures/tls/key.pem`),
  onListen() {},
}, upstream);
const notTls = `https://127.0.0.1:${stable[1].port}`;
const url = (u: Up) => `http://127.0.0.1:${u.port}`;

// ---- Config: generation `gen` adds/removes routes and targets, toggles HTTP/3 and health checks.
const dir = await Deno.makeTempDir({ prefix: "prox-soak-" });
await Deno.mkdir(`${dir}/www`);
for (let i = 0; i < 20; i++) await Deno.writeTextFile(`${dir}/www/f${i}.txt`, "x".repeat(100 * i));
await Deno.writeTextFile(`${dir}/www/index.html`, "<h1>hi</h1>");
await Deno.writeTextFile(`${dir}/www/404.html`, "not found");
/** One Prox under soak: the TLS one (always), the engine one (`--engine`). */
interface Prox {
  kind: "tls" | "engine";
  port: number;
  adminPort: number;
  inspectPort: number;
  configFile: string;
  pid: number;
  child: Deno.ChildProcess;
  problems: string[];
  stderrDone: Promise<void>;
  inspector: Inspector;
}
type Plan = Pick<Prox, "kind" | "port" | "adminPort" | "inspectPort" | "configFile">;
const plan = (kind: Prox["kind"]): Plan => ({
  kind,
  port: freePort(),
  adminPort: freePort(),
  inspectPort: freePort(),
  configFile: `${dir}/${kind}.yaml`,
});
let gen = 0;
/** Every sixth config puts the engine's Prox on Deno.serve (its listener is replaced twice). */
const engineOff = () => gen % 6 === 5;
function config(p: Plan): string {
  const extra = gen % 2 === 0
    ? Array.from(
      { length: 5 },
      (_, i) => `  "/g${gen}-${i}": { type: proxy, target: "${url(stable[i % 2])}" }`,
    )
    : [];
  const lb = [...stable, ...flapping].map(url);
  if (gen % 3 === 0) lb.push(dead, notTls);
  if (gen % 4 === 1) lb.push(`http://127.0.0.1:${20000 + gen}`); // a new target each time
  const top = p.kind === "tls"
    ? `tls: { cert_path: "${ROOT}/tests/fixtures/tls/cert.pem", key_path: "${ROOT}/tests/fixtures/tls/key.pem" }
protocols: { http3_enabled: ${gen % 5 !== 4} }`
    : `protocols: { http1_engine: ${engineOff() ? "deno" : "prox"} }`;
  return `listen_addr: "127.0.0.1:${p.port}"
${top}
admin: { listen_addr: "127.0.0.1:${p.adminPort}" }
log: { access_log: json }
health_check: { enabled: ${
    gen % 3 !== 2
  }, interval_secs: 2, timeout_secs: 1, path: /health, unhealthy_threshold: 2, healthy_threshold: 1 }
routes:
  "/p":
    type: proxy
    target: "${url(stable[0])}"
    rate_limit: { by: header, header_name: X-Key, requests: 50, period: 10s, max_keys: 3000 }
    request_headers: { add: { X-Real-IP: "{client_ip}" }, remove: [Cookie] }
    response_headers: { add: { X-Prox: "yes" } }
  "/lb": { type: load_balance, targets: [${
    lb.map((t) => `"${t}"`).join(", ")
  }], strategy: round_robin, compress: { min_length: 0 } }
  "/lc": { type: load_balance, targets: ["${url(stable[0])}", "${
    url(flapping[0])
  }"], strategy: least_connections }
  "/body":
    type: proxy
    target: "${url(stable[1])}"
    request_body: { condition: { method_is: POST }, set_json: { path: "{uri_path}", at: "{timestamp_iso}" } }
    response_body: { condition: { status_is: 200 }, set_text: "replaced for {client_ip}" }
  "/q":
    type: proxy
    target: "${url(stable[1])}"
    rate_limit: { by: query, query_param: k, requests: 5, period: 1m, algorithm: sliding_window, max_keys: 3000 }
  "/s":
    type: static
    root: "${dir}/www"
    index: index.html
    not_found_page: 404.html
    compress: { min_length: 0 }
    rate_limit: { by: cookie, cookie_name: sid, requests: 1000, period: 1m, algorithm: fixed_window, max_keys: 3000 }
  "/r": { type: redirect, target: "/s", status_code: 308 }
  "/ws": { type: websocket, target: "ws://127.0.0.1:${stable[0].port}" }
  "/dead": { type: proxy, target: "${dead}" }
  "/tls":
    type: load_balance
    targets: ["https://localhost:${tlsUp.addr.port}", "${notTls}"]
    tls: { ca_cert: "${ROOT}/tests/fixtures/tls/ca.pem" }
  "h.example.com/": { type: proxy, target: "${url(stable[0])}" }
${extra.join("\n")}
`;
}
async function start(p: Plan): Promise<Prox> {
  await Deno.writeTextFile(p.configFile, config(p));
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      V8_FLAGS,
      `--inspect=127.0.0.1:${p.inspectPort}`,
      `${ROOT}/mod.ts`,
      "serve",
      "-c",
      p.configFile,
    ],
    cwd: dir,
    // PROX_H1_ENGINE in the caller's environment would override the config's engine.
    env: { PROX_H1_ENGINE: "" },
    stdout: "null", // the access log: written and dropped
    stderr: "piped",
  }).spawn();
  const problems: string[] = []; // error lines Prox wrote (warnings are expected here)
  const stderrDone = (async () => {
    for await (const line of child.stderr.pipeThrough(new TextDecoderStream())) {
      for (const l of line.split("\n")) {
        if (l.includes('"level":"error"')) problems.push(l.slice(0, 300));
      }
    }
  })();
  for (const port of [p.port, p.adminPort]) { // the admin listener starts after the main one
    for (let i = 0; i < 200; i++) {
      try {
        (await Deno.connect({ hostname: "127.0.0.1", port })).close();
        break;
      } catch {
        await sleep(100);
      }
    }
  }
  console.log(
    `Prox (${p.kind}) pid ${child.pid} on ${p.port}, admin ${p.adminPort}, ` +
      `inspector ${p.inspectPort}, dir ${dir}`,
  );
  const inspector = await connectInspector(p.inspectPort);
  return { ...p, pid: child.pid, child, problems, stderrDone, inspector };
}

// ---- Inspector: sizes of every Map and Set in Prox's heap.
type Remote = { objectId: string };
async function collections(inspector: Inspector): Promise<string> {
  const out: string[] = [];
  for (const kind of ["Map", "Set"]) {
    const proto = await inspector.send("Runtime.evaluate", { expression: `${kind}.prototype` });
    const all = await inspector.send("Runtime.queryObjects", {
      prototypeObjectId: (proto.result!.result as Remote).objectId,
      objectGroup: "soak",
    });
    // Subclasses may override `size`: read the builtin getter. Each big one shows its first key.
    const fn = `function () {
      const size = Object.getOwnPropertyDescriptor(${kind}.prototype, "size").get;
      const keys = ${kind}.prototype.keys;
      const sized = this.map((m) => { try { return [size.call(m), m]; } catch { return [-1, m]; } });
      const top = sized.map(([n]) => n).filter((n) => n >= 20).sort((a, b) => b - a).slice(0, 10);
      const big = sized.filter(([n]) => n >= 200).slice(0, 6).map(([n, m]) => {
        const k = keys.call(m).next().value;
        return n + ":" + String(k && typeof k === "object" ? k.constructor?.name : k).slice(0, 40);
      });
      return this.length + " ${kind}s, " + sized.reduce((a, [n]) => a + Math.max(n, 0), 0) +
        " entries; largest " + top.join(",") + (big.length ? "; " + big.join(" | ") : "");
    }`;
    const r = await inspector.send("Runtime.callFunctionOn", {
      objectId: (all.result!.objects as Remote).objectId,
      functionDeclaration: fn,
      returnByValue: true,
    });
    out.push(String((r.result!.result as { value?: string }).value ?? JSON.stringify(r.result)));
    await inspector.send("Runtime.releaseObjectGroup", { objectGroup: "soak" });
  }
  return out.join("\n    ");
}

const proxes = [await start(plan("tls"))];
if (engineMode) proxes.push(await start(plan("engine")));
const [tlsProx, engineProx] = proxes as [Prox, Prox | undefined];

const t0 = Date.now();
async function sample(tag: string): Promise<void> {
  const secs = ((Date.now() - t0) / 1000).toFixed(0);
  console.log(`[${secs} s, ${tag}] ${JSON.stringify(stats)}`);
  for (const p of proxes) {
    const status = Deno.readTextFileSync(`/proc/${p.pid}/status`);
    const rss = Number(/VmRSS:\s+(\d+)/.exec(status)![1]) / 1024;
    const fds = [...Deno.readDirSync(`/proc/${p.pid}/fd`)].length;
    const metrics = await (await fetch(`http://127.0.0.1:${p.adminPort}/metrics`)).text();
    const lines = metrics.split("\n").filter((l) => l && !l.startsWith("#"));
    console.log(
      `  ${p.kind}: RSS ${rss.toFixed(1)} MiB, ${fds} fds, ${lines.length} series; ` +
        busy(lines) + await engineFigures(p) + `\n    ${await collections(p.inspector)}`,
    );
    for (const e of p.problems.splice(0)) console.log(`    Prox error: ${e}`);
  }
}
/** Gauges of work in progress, summed over their labels: all 0 once traffic stops, or one leaks. */
function busy(lines: string[]): string {
  return ["active_connections", "backend_in_flight_requests", "upstream_waiting"].map((g) => {
    const mine = lines.filter((l) => l.startsWith(`prox_${g}{`) || l.startsWith(`prox_${g} `));
    return `${g} ${mine.reduce((a, l) => a + Number(l.slice(l.lastIndexOf(" ") + 1)), 0)}`;
  }).join(", ");
}
/** The engine's counts from /status (since its listener started), or null while it is off. */
async function engineCounts(p: Prox): Promise<{ served: number; relayed: number } | null> {
  const status = await (await fetch(`http://127.0.0.1:${p.adminPort}/status`)).json();
  const main = (status.listeners as { name: string; http1Engine?: Record<string, number> }[])
    .find((l) => l.name === "main");
  return main?.http1Engine
    ? { served: main.http1Engine.served, relayed: main.http1Engine.relayed }
    : null;
}
/** What engine listeners that reloads replaced had counted (read just before the reload). */
const engineBefore = { served: 0, relayed: 0 };
async function engineFigures(p: Prox): Promise<string> {
  if (p.kind !== "engine") return "";
  const e = await engineCounts(p);
  const served = engineBefore.served + (e?.served ?? 0);
  const relayed = engineBefore.relayed + (e?.relayed ?? 0);
  return `; engine served ${served}, relayed ${relayed}${e ? "" : " (now on Deno.serve)"}`;
}
await sample("idle");

// ---- Traffic.
let running = true;
const h1 = Deno.createHttpClient({ caCerts: [ca], http2: false, allowHost: true });
const h2 = Deno.createHttpClient({ caCerts: [ca], http1: false, allowHost: true });
const base = `https://localhost:${tlsProx.port}`;
// To the engine: HTTP/1.1, and h2c with prior knowledge (relayed to Deno.serve).
const plain = Deno.createHttpClient({ http2: false, allowHost: true });
const h2c = Deno.createHttpClient({ http1: false, allowHost: true });
function randomPath(): string {
  const q = `?a=${rnd(1e6)}&b=${Math.random().toString(36).slice(2)}`;
  const paths = [
    `/p/x${rnd(1e6)}${q}`,
    `/lb/y${rnd(1e6)}${q}`,
    `/lb/y${q}`,
    `/lc/slow${q}`,
    `/body/z${rnd(1e6)}`,
    `/q/a?k=${rnd(1e5)}`,
    `/s/f${rnd(25)}.txt`,
    `/s/f${rnd(25)}.txt`,
    `/s/no${rnd(1e6)}`,
    `/r/x${rnd(1e6)}${q}`,
    `/dead/${rnd(1e6)}`,
    `/tls/t${rnd(1e6)}${q}`,
    `/g${gen}-${rnd(5)}/p`,
    `/lb/fail`,
    `/p/big`,
    `/nomatch/${rnd(1e6)}`,
    `/p/${rnd(1000)}${q}`,
  ];
  return paths[rnd(paths.length)];
}
/** A fetch to the TLS Prox, or in `--engine` mode half the time to the engine's. */
async function request(): Promise<void> {
  const p = engineProx && Math.random() < 0.5 ? engineProx : tlsProx;
  const engine = p === engineProx;
  const count = (k: string) => tally(engine ? `e:${k}` : k);
  const path = randomPath();
  const headers: Record<string, string> = { "x-key": `k${rnd(100000)}` };
  if (Math.random() < 0.1) headers.host = `h${rnd(1e6)}.example.com:${p.port}`;
  if (Math.random() < 0.05) headers.host = "h.example.com";
  if (Math.random() < 0.1) headers.cookie = `sid=${rnd(1e6)}`;
  const ac = new AbortController();
  const timer = setTimeout(() => (count("client timeout"), ac.abort()), 15_000);
  let body: BodyInit | undefined;
  const r = rnd(100);
  if (path.startsWith("/body") || r < 8) {
    let chunks = 0;
    body = r < 4 // a body given up after three chunks
      ? new ReadableStream({
        async pull(c) {
          if (++chunks > 3) return ac.abort(), c.error(new Error("given up"));
          c.enqueue(new Uint8Array(16384));
          await sleep(20);
        },
      })
      : JSON.stringify({ a: rnd(1e6) });
  } else if (engine && r < 11) { // chunked, complete (relayed)
    let chunks = 0;
    body = new ReadableStream({
      pull(c) {
        if (++chunks > 2) return c.close();
        c.enqueue(new Uint8Array(1000 * chunks));
      },
    });
  } else if (engine && r < 14) body = new Uint8Array(65_537 + rnd(100_000)); // relayed
  const client = engine ? (Math.random() < 0.8 ? plain : h2c) : Math.random() < 0.5 ? h1 : h2;
  try {
    const res = await fetch((engine ? `http://127.0.0.1:${p.port}` : base) + path, {
      client,
      method: body ? "POST" : "GET",
      headers,
      body,
      signal: ac.signal,
      redirect: "manual",
    });
    count(String(res.status));
    if (path === "/p/big" && Math.random() < 0.5) { // a download given up after the first chunk
      const reader = res.body!.getReader();
      await reader.read();
      await reader.cancel();
    } else await res.arrayBuffer();
  } catch {
    count("fetch failed");
  } finally {
    clearTimeout(timer);
  }
}
async function every(ms: number, fn: () => Promise<unknown>): Promise<void> {
  while (running) {
    const t = Date.now();
    await fn().catch(() => count(`${fn.name} failed`));
    await sleep(Math.max(0, ms - (Date.now() - t)));
  }
}
function websocket(): Promise<void> {
  const engine = engineProx && Math.random() < 0.3;
  const count = (k: string) => tally(engine ? `e:${k}` : k);
  const ws = engine
    ? new WebSocket(`ws://127.0.0.1:${engineProx.port}/ws/x${rnd(100)}`)
    : new WebSocket(`wss://localhost:${tlsProx.port}/ws/x${rnd(100)}`, { client: h1 });
  return new Promise<void>((ok, fail) => {
    const timer = setTimeout(() => ws.close(), 3000);
    let echoes = 0;
    ws.onopen = () => (ws.send("hi"), ws.send(new Uint8Array(1000)));
    ws.onmessage = () => ++echoes === 2 && ws.close(Math.random() < 0.7 ? 1000 : 4000 + rnd(10));
    ws.onclose = () => (clearTimeout(timer), count("websocket"), ok());
    ws.onerror = () => (clearTimeout(timer), fail(new Error("WebSocket failed")));
  });
}
async function dropped(): Promise<void> { // a TLS connection that goes away mid-request
  const c = await Deno.connectTls({ hostname: "localhost", port: tlsProx.port, caCerts: [ca] });
  const heads = [
    "GET /p/a HTTP/1.1\r\nHost: localhost\r\n",
    "POST /body/x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000\r\n\r\nabc",
    "GET /ws/a HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
  ];
  await c.write(new TextEncoder().encode(heads[rnd(heads.length)]));
  await sleep(100 + rnd(400));
  c.close();
  count("dropped");
}
let toolRun = 0;
async function tools(): Promise<void> {
  const quic = ["--no-quic-dump", "--no-http-dump", "--exit-on-all-streams-close", "--timeout=5s"];
  const runs: [string, string[]][] = [
    ["h2load", ["-n", "200", "-c", "2", "--rps", "20", `${base}/p/h2load`]],
    [
      "gtlsclient",
      [...quic, "127.0.0.1", String(tlsProx.port), `${base}/lb/h3`, `${base}/s/f3.txt`],
    ],
    ["curl", ["-sk", "--http1.1", "-o", "/dev/null", `${base}/s/f1.txt`, `${base}/r/a`]],
  ];
  await tool(...runs[toolRun++ % runs.length]);
}
async function tool(name: string, args: string[], tag = name): Promise<void> {
  if (!findTool(name)) return;
  const out = await new Deno.Command(name, { args, stdout: "null", stderr: "null" }).output();
  count(out.success ? tag : `${tag} failed`);
}
let engineToolRun = 0;
/** h2c with prior knowledge (curl, nghttp, h2load) and uploads curl frames its own way. */
async function engineTools(): Promise<void> {
  const e = `http://127.0.0.1:${engineProx!.port}`;
  const runs: [string, string[], string][] = [
    ["h2load", ["-n", "100", "-c", "2", "--rps", "20", `${e}/p/h2c`], "e:h2load"],
    ["nghttp", ["-n", `${e}/s/f2.txt`, `${e}/lb/nghttp`], "e:nghttp"],
    // One URL: curl 7.88 fails a second request on an h2c connection to Deno.serve (error 16).
    ["curl", ["-s", "--http2-prior-knowledge", "-o", "/dev/null", `${e}/p/curl`], "e:curl h2c"],
    [ // chunked upload with Expect: 100-continue
      "curl",
      [
        "-s",
        "-o",
        "/dev/null",
        "-H",
        "Transfer-Encoding: chunked",
        "-H",
        "Expect: 100-continue",
        "--data-binary",
        "@" + `${dir}/www/f19.txt`,
        `${e}/p/upload`,
      ],
      "e:curl upload",
    ],
  ];
  await tool(...runs[engineToolRun++ % runs.length]);
}
/** A raw client of soak_engine.ts (pipelined, late body, mid-head leaver…). */
async function engineRaw(): Promise<void> {
  tally(`e:${await engineClient(engineProx!.port).catch((e) => `raw failed (${e.message})`)}`);
}
async function flap(): Promise<void> {
  const u = flapping[rnd(flapping.length)];
  if (u.server) await u.server.shutdown(), u.server = undefined;
  else serve(u);
}
async function reload(): Promise<void> {
  gen++;
  for (const p of proxes) { // the file watch reloads; every other one a SIGHUP
    if (p.kind === "engine" && engineOff()) { // the engine goes: keep its counts
      const e = await engineCounts(p);
      engineBefore.served += e?.served ?? 0;
      engineBefore.relayed += e?.relayed ?? 0;
    }
    await Deno.writeTextFile(p.configFile, config(p));
    if (gen % 2 === 0) Deno.kill(p.pid, "SIGHUP");
  }
}
async function scrape(): Promise<void> {
  for (const p of proxes) {
    for (const path of ["/metrics", "/status", "/config"]) {
      await (await fetch(`http://127.0.0.1:${p.adminPort}${path}`)).arrayBuffer();
    }
  }
}
const loops = [
  ...Array.from({ length: WORKERS }, () => every(gapMs, request)),
  every(300, websocket),
  every(300, websocket),
  every(500, dropped),
  every(2000, tools),
  every(5000 + rnd(5000), flap),
  every(10_000 + rnd(8000), reload),
  every(5000, scrape),
  ...(engineProx ? [every(2000, engineTools), every(200, engineRaw), every(400, engineRaw)] : []),
];
const end = t0 + minutes * 60_000;
while (Date.now() < end) {
  await sleep(Math.min(30_000, end - Date.now()));
  await sample(`config ${gen}`);
}
running = false;
await Promise.all(loops);
for (const u of flapping) if (!u.server) serve(u);
// The clients' pooled connections go too: what stays open from here on is Prox's doing.
for (const c of [h1, h2, plain, h2c]) c.close();
console.log("Traffic stopped");
for (let i = 0; i < 4; i++) {
  await sleep(15_000);
  await sample("after traffic");
}
for (const p of proxes) {
  p.inspector.close();
  p.child.kill("SIGTERM");
  await p.child.status;
  await p.stderrDone;
}
for (const u of [...stable, ...flapping]) await u.server?.shutdown();
await tlsUp.shutdown();
await Deno.remove(dir, { recursive: true });
