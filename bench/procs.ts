// Processes for the side-by-side benchmark: the nginx backend, nginx and haproxy as reference
// proxies, Prox itself, fetch()- and Hono-based Deno proxies, each pinned to a core with taskset; and
// their CPU time and resident memory read from /proc (all descendant processes included).

import { ROOT } from "../tests/_harness.ts";
import { V8_FLAGS } from "../tests/integration/_process.ts";

/** A started process under test. */
export interface Proc extends AsyncDisposable {
  name: string;
  pid: number;
  /** Plain HTTP/1.1 port. */
  port: number;
  /** TLS port (h2 + http/1.1 by ALPN), when the process has one. */
  tlsPort?: number;
  /** The process serving `tlsPort`, when it is not `pid`. */
  tlsPid?: number;
  /**
   * HTTP/2 with prior knowledge (h2c), when not on `port`: the backend's gRPC-like answers, and
   * nginx's `grpc_pass` server (an nginx port that takes h2c takes no HTTP/1.1).
   */
  h2cPort?: number;
}

/** A free TCP port on 127.0.0.1 (bind :0, read, close). */
export function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

const CLK_TCK = 100;

function descendants(pid: number): number[] {
  const out = [pid];
  for (let i = 0; i < out.length; i++) {
    try {
      const kids = Deno.readTextFileSync(`/proc/${out[i]}/task/${out[i]}/children`).trim();
      if (kids) out.push(...kids.split(/\s+/).map(Number));
    } catch { /* gone */ }
  }
  return out;
}

/** CPU seconds (user + system) used so far by `pid` and its descendants. */
export function cpuSeconds(pid: number): number {
  let ticks = 0;
  for (const p of descendants(pid)) {
    try {
      const stat = Deno.readTextFileSync(`/proc/${p}/stat`);
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      ticks += Number(f[11]) + Number(f[12]); // utime, stime (fields 14 and 15)
    } catch { /* gone */ }
  }
  return ticks / CLK_TCK;
}

/** Resident memory in bytes of `pid` and its descendants. */
export function rssBytes(pid: number): number {
  let kb = 0;
  for (const p of descendants(pid)) {
    try {
      const m = /^VmRSS:\s+(\d+) kB/m.exec(Deno.readTextFileSync(`/proc/${p}/status`));
      if (m) kb += Number(m[1]);
    } catch { /* gone */ }
  }
  return kb * 1024;
}

export async function waitPort(port: number, what: string): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    try {
      const c = await Deno.connect({ hostname: "127.0.0.1", port });
      c.close();
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  throw new Error(`Cannot start ${what}: port ${port} never answered`);
}

/** Starts `cmd` pinned to `core`, waits for its ports. */
/**
 * Starts `cmd` pinned to `core` (taskset) and waits until each of `ports` answers; a process whose
 * ports never do is killed. Its stdout is discarded, its stderr too unless `stderr` says otherwise
 * (`env` adds to this process's environment).
 */
export async function spawn(
  name: string,
  o: {
    core: string;
    cmd: string[];
    ports: number[];
    cwd?: string;
    env?: Record<string, string>;
    stderr?: "inherit" | "piped" | "null";
  },
): Promise<Deno.ChildProcess> {
  const child = new Deno.Command("taskset", {
    args: ["-c", o.core, ...o.cmd],
    cwd: o.cwd,
    env: o.env,
    stdin: "null",
    stdout: "null",
    stderr: o.stderr ?? "null",
  }).spawn();
  try {
    for (const p of o.ports) await waitPort(p, name);
  } catch (err) {
    await stopper(child, "SIGKILL")();
    throw err;
  }
  return child;
}

function stopper(child: Deno.ChildProcess, signal: Deno.Signal = "SIGTERM") {
  return async () => {
    try {
      child.kill(signal);
    } catch { /* gone */ }
    const t = setTimeout(() => {
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
    }, 5_000);
    await child.status;
    clearTimeout(t);
  };
}

/** Test certificate and key used by every TLS listener. */
export const TLS = {
  cert: `${ROOT}/tests/fixtures/tls/cert.pem`,
  key: `${ROOT}/tests/fixtures/tls/key.pem`,
};

const NGINX_COMMON = (dir: string) =>
  `daemon off;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log error;
worker_rlimit_nofile 20000;
events { worker_connections 10000; }
`;

const TEMP_PATHS = (dir: string) =>
  `client_body_temp_path ${dir}/b; proxy_temp_path ${dir}/p; fastcgi_temp_path ${dir}/f;
  uwsgi_temp_path ${dir}/u; scgi_temp_path ${dir}/s;`;

/**
 * The fixed backend: nginx serving /100b and /64k from memory-cached files, and answering POST
 * /post with a 100-byte body after reading the request body.
 */
export async function startBackend(dir: string, core: string): Promise<Proc> {
  const port = freePort();
  const h2cPort = freePort();
  const root = `${dir}/www`;
  await Deno.mkdir(root, { recursive: true, mode: 0o755 });
  await Deno.chmod(dir, 0o755);
  await Deno.writeTextFile(`${root}/100b`, "b".repeat(100), { mode: 0o644 });
  await Deno.writeTextFile(`${root}/64k`, "k".repeat(65536), { mode: 0o644 });
  const conf = `${dir}/backend.conf`;
  await Deno.writeTextFile(
    conf,
    `${NGINX_COMMON(`${dir}/backend`)}http {
  access_log off; ${TEMP_PATHS(dir)}
  keepalive_requests 1000000; keepalive_timeout 120s;
  open_file_cache max=100; sendfile on; tcp_nopush on;
  server {
    listen 127.0.0.1:${port} backlog=4096; root ${root}; default_type text/plain;
    location = /post { return 200 "${"p".repeat(100)}"; }
  }
  server {
    # gRPC-like answers over h2c for the grpc scenario: 100 bytes to any POST.
    listen 127.0.0.1:${h2cPort} http2 backlog=4096;
    location / { default_type application/grpc; return 200 "${"g".repeat(100)}"; }
  }
}
`,
  );
  await Deno.mkdir(`${dir}/backend`, { recursive: true });
  const child = await spawn("nginx backend", {
    core,
    cmd: ["nginx", "-c", conf, "-p", dir],
    ports: [port, h2cPort],
  });
  return {
    name: "backend",
    pid: child.pid,
    port,
    h2cPort,
    [Symbol.asyncDispose]: stopper(child, "SIGQUIT"),
  };
}

/** nginx as a reverse proxy with a keep-alive upstream pool. */
export async function startNginxProxy(
  dir: string,
  o: { core: string; backend: number; backendH2c?: number },
): Promise<Proc> {
  const port = freePort();
  const tlsPort = freePort();
  const h2cPort = freePort();
  const conf = `${dir}/nginx-proxy.conf`;
  await Deno.mkdir(`${dir}/nginx-proxy`, { recursive: true });
  await Deno.writeTextFile(
    conf,
    `${NGINX_COMMON(`${dir}/nginx-proxy`)}http {
  access_log off; ${TEMP_PATHS(dir)}
  keepalive_requests 1000000; keepalive_timeout 120s;
  upstream backend { server 127.0.0.1:${o.backend}; keepalive 64; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:${port} backlog=4096;
    listen 127.0.0.1:${tlsPort} ssl http2 backlog=4096;
    ssl_certificate ${TLS.cert}; ssl_certificate_key ${TLS.key};
    location / {
      proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    }
  }${
      o.backendH2c === undefined ? "" : `
  upstream grpc_backend { server 127.0.0.1:${o.backendH2c}; keepalive 64; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:${h2cPort} http2 backlog=4096;
    location / { grpc_pass grpc://grpc_backend; grpc_set_header X-Forwarded-For $proxy_add_x_forwarded_for; }
  }`
    }
}
`,
  );
  const child = await spawn("nginx proxy", {
    core: o.core,
    cmd: ["nginx", "-c", conf, "-p", dir],
    ports: o.backendH2c === undefined ? [port, tlsPort] : [port, tlsPort, h2cPort],
  });
  return {
    name: "nginx",
    pid: child.pid,
    port,
    tlsPort,
    h2cPort: o.backendH2c === undefined ? undefined : h2cPort,
    [Symbol.asyncDispose]: stopper(child, "SIGQUIT"),
  };
}

/** haproxy in HTTP mode, one thread, with connection reuse to the backend. */
export async function startHaproxy(
  dir: string,
  o: { core: string; backend: number },
): Promise<Proc> {
  const port = freePort();
  const tlsPort = freePort();
  const pem = `${dir}/haproxy.pem`;
  await Deno.writeTextFile(
    pem,
    (await Deno.readTextFile(TLS.cert)) + (await Deno.readTextFile(TLS.key)),
  );
  const conf = `${dir}/haproxy.cfg`;
  await Deno.writeTextFile(
    conf,
    `global
  nbthread 1
  maxconn 9000
defaults
  mode http
  option forwardfor
  http-reuse always
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend f
  bind 127.0.0.1:${port}
  bind 127.0.0.1:${tlsPort} ssl crt ${pem} alpn h2,http/1.1
  default_backend b
backend b
  server s1 127.0.0.1:${o.backend} maxconn 9000
`,
  );
  const child = await spawn("haproxy", {
    core: o.core,
    cmd: ["haproxy", "-f", conf, "-db"],
    ports: [port, tlsPort],
  });
  return { name: "haproxy", pid: child.pid, port, tlsPort, [Symbol.asyncDispose]: stopper(child) };
}

/** A realistic Prox config: 10 routes, header rules, metrics on the main listener. */
export function proxConfig(
  o: {
    port: number;
    backend: number;
    tls?: boolean;
    engine?: "deno" | "prox";
    /** The backend's h2c port: the last decoy route becomes the grpc scenario's h2c route. */
    backendH2c?: number;
  },
): string {
  const decoys = Array.from(
    { length: 8 },
    (_, i) =>
      i === 7 && o.backendH2c !== undefined
        ? `  "/grpc.Bench": { type: proxy, target: "http://127.0.0.1:${o.backendH2c}/grpc.Bench", upstream_protocol: h2c }`
        : `  "/svc${i}/api": { type: proxy, target: "http://127.0.0.1:${o.backend}", path_rewrite: "/" }`,
  )
    .join("\n");
  return `listen_addr: "127.0.0.1:${o.port}"
${o.tls ? `tls: { cert_path: "${TLS.cert}", key_path: "${TLS.key}" }\n` : ""}${
    o.engine ? `protocols: { http1_engine: ${o.engine} }\n` : ""
  }health_check: { enabled: false }
log: { level: warn, access_log: false }
metrics: { on_main_listener: true }
routes:
${decoys}
  "/old": { type: redirect, target: "/new" }
  "/":
    type: proxy
    target: "http://127.0.0.1:${o.backend}"
    request_headers: { add: { x-bench: "1" }, remove: [x-debug] }
    response_headers: { add: { x-served-by: prox } }
`;
}

/**
 * Prox (`mod.ts serve`) with the realistic config; plain (on Prox's own HTTP/1.1 engine, the
 * default) and TLS listeners in two processes. With `engine: "deno"` (`prox-deno`): the plain
 * listener only, on Deno.serve.
 */
export async function startProx(
  dir: string,
  o: { core: string; backend: number; backendH2c?: number; engine?: "deno" },
): Promise<Proc> {
  const port = freePort();
  const tlsPort = freePort();
  const children: Deno.ChildProcess[] = [];
  const listeners = o.engine ? [[port, false] as const] : [[port, false], [tlsPort, true]] as const;
  for (const [p, tls] of listeners) {
    const conf = `${dir}/prox-${p}.yaml`;
    await Deno.writeTextFile(
      conf,
      proxConfig({ port: p, backend: o.backend, backendH2c: o.backendH2c, tls, engine: o.engine }),
    );
    children.push(
      await spawn("prox", {
        core: o.core,
        cmd: [
          Deno.execPath(),
          "run",
          "-A",
          // As shipped (`make run`, `make compile`: V8_FLAGS in the Makefile); BENCH_V8_FLAGS=""
          // measures Prox without it.
          ...(Deno.env.get("BENCH_V8_FLAGS") ?? V8_FLAGS)
            .split(" ")
            .filter(Boolean),
          `--config=${ROOT}/deno.json`,
          `${ROOT}/mod.ts`,
          "serve",
          "-c",
          conf,
        ],
        ports: [p],
        // PROX_H1_ENGINE in the caller's environment would override the config's engine.
        env: { ...Deno.env.toObject(), PROX_LOG_LEVEL: "warn", PROX_H1_ENGINE: "" },
      }),
    );
  }
  const [plain, tls] = children;
  return {
    name: o.engine ? "prox-deno" : "prox",
    pid: plain.pid,
    port,
    tlsPort,
    tlsPid: tls?.pid,
    async [Symbol.asyncDispose]() {
      await stopper(plain)();
      if (tls) await stopper(tls)();
    },
  };
}

/** Deno.serve + Prox's upstream client and nothing else: the client's share of Prox's cost. */
export async function startClientProxy(o: { core: string; backend: number }): Promise<Proc> {
  const port = freePort();
  const tlsPort = freePort();
  const child = await spawn("deno client proxy", {
    core: o.core,
    cmd: [
      Deno.execPath(),
      "run",
      "-A",
      `--config=${ROOT}/deno.json`,
      `${ROOT}/bench/client_proxy.ts`,
      String(port),
      String(o.backend),
      String(tlsPort),
      TLS.cert,
      TLS.key,
    ],
    ports: [port, tlsPort],
  });
  return {
    name: "deno-h1client",
    pid: child.pid,
    port,
    tlsPort,
    [Symbol.asyncDispose]: stopper(child),
  };
}

/** The single-script Deno proxies: what each baseline runs. */
const BASELINES = {
  "deno-fetch": [`${ROOT}/bench/fetch_proxy.ts`],
  "deno-hono": [`--config=${ROOT}/deno.json`, `${ROOT}/bench/hono_proxy.ts`],
  "deno-bare": [`${ROOT}/bench/bare_proxy.ts`],
  "deno-raw": [`${ROOT}/bench/raw_proxy.ts`],
};

/**
 * Plain-HTTP Deno proxies to compare with: the naive baselines of issue 12, Deno.serve + fetch()
 * forwarding (`deno-fetch`, measured there at 130–170 µs per request) and Hono's proxy helper on
 * Deno.serve (`deno-hono`, 220–255 µs); the least a proxy on Deno.serve can do (`deno-bare`), and
 * the least one on raw sockets can do, with neither Deno.serve nor Fetch objects (`deno-raw`).
 */
export async function startFetchProxy(
  o: { core: string; backend: number },
  name: keyof typeof BASELINES = "deno-fetch",
): Promise<Proc> {
  const port = freePort();
  const script = BASELINES[name];
  const child = await spawn(name, {
    core: o.core,
    cmd: [Deno.execPath(), "run", "-A", ...script, String(port), String(o.backend)],
    ports: [port],
  });
  return { name, pid: child.pid, port, [Symbol.asyncDispose]: stopper(child) };
}

/** Deno.serve answering by itself (no upstream): the ceiling for a proxy built on it. */
export async function startServeAlone(o: { core: string }): Promise<Proc> {
  const port = freePort();
  const tlsPort = freePort();
  const child = await spawn("Deno.serve alone", {
    core: o.core,
    cmd: [
      Deno.execPath(),
      "run",
      "-A",
      `${ROOT}/bench/serve_alone.ts`,
      String(port),
      String(tlsPort),
      TLS.cert,
      TLS.key,
    ],
    ports: [port, tlsPort],
  });
  return {
    name: "deno-serve",
    pid: child.pid,
    port,
    tlsPort,
    [Symbol.asyncDispose]: stopper(child),
  };
}
