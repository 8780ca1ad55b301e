// HTTP/3 download throughput: gtlsclient (ngtcp2) fetches one large file over h3 from Prox and
// from Caddy, both serving it statically and both proxying it from the same upstream, and prints
// the median time and MiB/s per case. Needs `gtlsclient` (Debian ngtcp2-client) and `caddy`.
// Run: deno run -A bench/h3_download.ts [--mb 50] [--runs 3] [--json]

import { parseArgs } from "node:util";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    mb: { type: "string", default: "50" },
    runs: { type: "string", default: "3" },
    json: { type: "boolean", default: false },
  },
});
for (const tool of ["gtlsclient", "caddy"]) {
  const found = await new Deno.Command(tool, {
    args: ["--version"],
    stdout: "null",
    stderr: "null",
  })
    .output().then(() => true, () => false);
  if (!found) {
    Deno.stderr.writeSync(
      new TextEncoder().encode(
        `Cannot run h3_download: ${tool} is not installed (apt-get install -y ${
          tool === "caddy" ? "caddy" : "ngtcp2-client"
        })\n`,
      ),
    );
    Deno.exit(2);
  }
}
const MB = Number(values.mb);
const RUNS = Number(values.runs);
const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const TLS = `${ROOT}/tests/fixtures/tls`;
const out = (line: string) => Deno.stdout.writeSync(new TextEncoder().encode(line + "\n"));

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

async function waitReady(url: string, client: Deno.HttpClient): Promise<void> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    try {
      const res = await fetch(url, { client });
      await res.body?.cancel();
      return;
    } catch (err) {
      if (Date.now() > deadline) throw new Error(`Cannot reach ${url}: ${err}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

const dir = await Deno.makeTempDir({ prefix: "h3bench" });
const data = new Uint8Array(MB * 1024 * 1024);
for (let off = 0; off < data.length; off += 65536) {
  crypto.getRandomValues(data.subarray(off, Math.min(off + 65536, data.length)));
}
await Deno.mkdir(`${dir}/www`);
await Deno.writeFile(`${dir}/www/big.bin`, data);

// The shared upstream both servers proxy to.
const upstream = Deno.serve(
  { hostname: "127.0.0.1", port: 0, onListen() {} },
  () => new Response(data, { headers: { "content-type": "application/octet-stream" } }),
);
const upUrl = `http://127.0.0.1:${upstream.addr.port}`;

const proxPort = freePort();
await Deno.writeTextFile(
  `${dir}/prox.yaml`,
  `listen_addr: "127.0.0.1:${proxPort}"
tls: { cert_path: "${TLS}/cert.pem", key_path: "${TLS}/key.pem" }
protocols: { http3_enabled: true }
health_check: { enabled: false }
log: { level: warn, access_log: false }
routes:
  "/files": { type: static, root: "${dir}/www" }
  "/proxy": { type: proxy, target: "${upUrl}", path_rewrite: "/" }
`,
);
const caddyPort = freePort();
await Deno.writeTextFile(
  `${dir}/Caddyfile`,
  `{
  admin off
  servers {
    protocols h1 h2 h3
  }
}
https://localhost:${caddyPort} {
  bind 127.0.0.1
  tls ${TLS}/cert.pem ${TLS}/key.pem
  handle_path /files/* {
    root * ${dir}/www
    file_server
  }
  handle_path /proxy/* {
    reverse_proxy ${upUrl}
  }
}
`,
);

const children: Deno.ChildProcess[] = [];
const spawn = (cmd: string, args: string[]) => {
  const child = new Deno.Command(cmd, { args, cwd: ROOT, stdout: "null", stderr: "piped" }).spawn();
  children.push(child);
  return child;
};
spawn(Deno.execPath(), ["run", "-A", "mod.ts", "serve", "-c", `${dir}/prox.yaml`]);
spawn("caddy", ["run", "--config", `${dir}/Caddyfile`, "--adapter", "caddyfile"]);
const client = Deno.createHttpClient({ caCerts: [await Deno.readTextFile(`${TLS}/ca.pem`)] });

interface Row {
  server: string;
  route: string;
  seconds: number;
  mibPerSec: number;
  runs: number[];
}
const rows: Row[] = [];
try {
  await waitReady(`https://localhost:${proxPort}/files/big.bin`, client);
  await waitReady(`https://localhost:${caddyPort}/files/big.bin`, client);
  for (const route of ["files", "proxy"]) {
    for (const [server, port] of [["prox", proxPort], ["caddy", caddyPort]] as const) {
      const times: number[] = [];
      for (let i = 0; i < RUNS; i++) {
        const dl = `${dir}/dl-${server}-${route}-${i}`;
        await Deno.mkdir(dl);
        const t0 = performance.now();
        await new Deno.Command("gtlsclient", {
          args: [
            "--quiet",
            "--no-quic-dump",
            "--no-http-dump",
            "--exit-on-all-streams-close",
            `--download=${dl}`,
            "127.0.0.1",
            String(port),
            `https://localhost:${port}/${route}/big.bin`,
          ],
          stdout: "null",
          stderr: "null",
        }).output();
        const secs = (performance.now() - t0) / 1000;
        const got = await Deno.readFile(`${dl}/big.bin`).catch(() => new Uint8Array(0));
        const intact = got.length === data.length && got.every((b, j) => b === data[j]);
        if (!intact) {
          throw new Error(`${server} ${route} run ${i}: download incomplete (${got.length} bytes)`);
        }
        times.push(secs);
        await Deno.remove(dl, { recursive: true });
      }
      times.sort((a, b) => a - b);
      const median = times[Math.floor(times.length / 2)];
      rows.push({ server, route, seconds: median, mibPerSec: MB / median, runs: times });
    }
  }
} finally {
  client.close();
  for (const c of children) {
    try {
      c.kill("SIGTERM");
    } catch { /* gone */ }
    await c.status;
    await c.stderr.cancel().catch(() => {});
  }
  await upstream.shutdown();
  await Deno.remove(dir, { recursive: true });
}

if (values.json) {
  out(JSON.stringify({ bench: "h3_download", mb: MB, runs: RUNS, results: rows }));
} else {
  out(`HTTP/3 download of ${MB} MiB with gtlsclient, median of ${RUNS} runs`);
  out("server  route   seconds   MiB/s");
  for (const r of rows) {
    out(
      `${r.server.padEnd(7)} ${r.route.padEnd(7)} ${r.seconds.toFixed(2).padStart(7)} ${
        r.mibPerSec.toFixed(1).padStart(7)
      }`,
    );
  }
}
