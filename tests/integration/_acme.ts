// Helpers for the ACME tests against Debian's pebble: the config, an in-process Prox, HTTPS
// requests verified against pebble's root, and temporary storage.
import tls from "node:tls";
import { X509Certificate } from "node:crypto";
import { startServer } from "../../src/server.ts";
import type { ProxServer } from "../../src/server.ts";
import type { AcmeTuning } from "../../src/adapters/acme.ts";
import type { Logger } from "../../src/ports.ts";
import { PEBBLE_TLS_CA } from "./_pebble.ts";
import { waitFor } from "../_harness.ts";

/** The tools every ACME test needs. */
export const TOOLS = ["pebble", "pebble-challtestsrv"];
/** The names the certificates are ordered for. */
export const DOMAINS = ["prox.test", "www.prox.test"];

/** A config with ACME against `ca` (pebble) in front of `upstream`. */
export function acmeYaml(
  o: {
    ca: string;
    storage: string;
    httpPort: number;
    upstream: string;
    extra?: string;
    /** More lines of `tls.acme` (YAML, at its indentation). */
    acmeExtra?: string;
    domains?: string[];
    /** The account's email; null: none. */
    email?: string | null;
  },
): string {
  return `listen_addr: "127.0.0.1:0"
health_check: { enabled: false }
${o.extra ?? ""}
tls:
  acme:
    enabled: true
    domains: ${JSON.stringify(o.domains ?? DOMAINS)}
${
    o.email === null ? "" : `    email: "${o.email ?? "ops@prox.test"}"
`
  }    ca_url: "${o.ca}"
    ca_cert: "${PEBBLE_TLS_CA}"
    storage_path: "${o.storage}"
    http_listen_addr: "127.0.0.1:${o.httpPort}"
${o.acmeExtra ?? ""}
routes:
  "/":
    type: proxy
    target: "${o.upstream}"
`;
}

/** acmeYaml for on-demand TLS: storage in `dir`/acme, `on_demand` asking `ask`, then `onDemand`. */
export function onDemandYaml(
  o: {
    pebble: { directoryUrl: string };
    dir: string;
    httpPort: number;
    upstream: string;
    ask: string;
    /** More lines of `tls.acme.on_demand` (YAML, at its indentation). */
    onDemand?: string;
    extra?: string;
  },
): string {
  return acmeYaml({
    ca: o.pebble.directoryUrl,
    storage: `${o.dir}/acme`,
    httpPort: o.httpPort,
    upstream: o.upstream,
    ...(o.extra === undefined ? {} : { extra: o.extra }),
    acmeExtra: `    on_demand:\n      ask: "${o.ask}"\n${o.onDemand ?? ""}`,
  });
}

/** An on-demand ask endpoint allowing `allowed` (any name when not given); `asked`: the names. */
export function startAsk(allowed?: string[]) {
  const asked: string[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (req) => {
    const name = new URL(req.url).searchParams.get("domain") ?? "";
    asked.push(name);
    const ok = allowed === undefined || allowed.includes(name);
    return new Response(null, { status: ok ? 200 : 403 });
  });
  return {
    asked,
    url: `http://127.0.0.1:${server.addr.port}/allowed`,
    [Symbol.asyncDispose]: () => server.shutdown(),
  };
}

/** Collects log lines (message + fields) so tests can assert on them. */
export function memoryLogger(): Logger & { lines: string[]; times: number[] } {
  const lines: string[] = [];
  const times: number[] = [];
  const log = (level: string, msg: string, fields?: Record<string, unknown>) => {
    if (lines.length >= 10_000) return;
    lines.push(`${level} ${msg} ${JSON.stringify(fields ?? {})}`);
    times.push(performance.now());
  };
  return {
    lines,
    times,
    log,
    debug: () => {},
    info: (m, f) => log("info", m, f),
    warn: (m, f) => log("warn", m, f),
    error: (m, f) => log("error", m, f),
  };
}

/** Starts Prox in-process from YAML, with ACME tuning for fast tests. */
export async function start(yaml: string, acme?: AcmeTuning, logger?: Logger): Promise<ProxServer> {
  return await startServer({ text: yaml, name: "acme.yaml" }, {
    logger: logger ?? memoryLogger(),
    acme,
    watch: false,
  });
}

/** One HTTPS request over a fresh connection verified against `ca`: the served certificate and the answer. */
export async function tlsGet(
  port: number,
  ca: string,
  path = "/",
  servername = DOMAINS[0],
): Promise<{ serial: string; names: string; key: string; status: number; body: string }> {
  const socket = tls.connect({ host: "127.0.0.1", port, servername, ca });
  socket.setTimeout(10_000, () => socket.destroy(new Error("TLS request timed out")));
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once("secureConnect", () => resolve());
      socket.once("error", reject);
    });
    const peer = socket.getPeerCertificate();
    const chunks: Uint8Array[] = [];
    socket.on("data", (c: Uint8Array) => chunks.push(c));
    const ended = new Promise<void>((resolve, reject) => {
      socket.once("end", () => resolve());
      socket.once("error", reject);
    });
    socket.write(`GET ${path} HTTP/1.1\r\nHost: ${servername}\r\nConnection: close\r\n\r\n`);
    await ended;
    const raw = new TextDecoder().decode(
      chunks.reduce((a, c) => new Uint8Array([...a, ...c]), new Uint8Array()),
    );
    const status = Number(raw.match(/^HTTP\/1\.1 (\d{3})/)?.[1] ?? 0);
    // The served key as `rsa 2048` or `ec secp384r1`.
    const pub = new X509Certificate(peer.raw).publicKey;
    const d = pub.asymmetricKeyDetails;
    const key = `${pub.asymmetricKeyType} ${d?.namedCurve ?? d?.modulusLength}`;
    return { serial: peer.serialNumber, names: peer.subjectaltname ?? "", key, status, body: raw };
  } finally {
    socket.destroy();
  }
}

/** The serial number (hex, upper case) of the first certificate in a PEM chain. */
export function currentSerial(pem: string): string {
  return new X509Certificate(pem).serialNumber.toUpperCase();
}

/** Runs `fn` with a fresh temporary directory, removed afterwards. */
export async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "prox-acme-" });
  try {
    await fn(dir);
  } finally {
    // An ACME store write that was under way when the server stopped (a back-off or lock file) can
    // land while the directory is being removed ("Directory not empty"): remove again once it has.
    await waitFor(async () => {
      try {
        await Deno.remove(dir, { recursive: true });
        return true;
      } catch (err) {
        if (err instanceof Deno.errors.NotFound) return true;
        return false;
      }
    }, { what: `temporary directory ${dir} removed`, intervalMs: 20 });
  }
}
