// Runs Debian's pebble (Let's Encrypt's test CA) and pebble-challtestsrv (its mock DNS, which
// resolves every name to 127.0.0.1) on loopback with free ports, for the ACME tests.

import { X509Certificate } from "node:crypto";
import { freePort, ROOT, waitFor } from "../_harness.ts";

export { freePort };

/** The test CA that signed pebble's own HTTPS certificate (trusted through `tls.acme.ca_cert`). */
export const PEBBLE_TLS_CA = `${ROOT}/tests/fixtures/tls/ca.pem`;

/** A running pebble; dispose to stop it and its DNS server. */
export interface Pebble extends AsyncDisposable {
  directoryUrl: string;
  /** The root that signs issued certificates (PEM), for clients of the proxy. */
  root: string;
  /** Lines pebble logged so far. */
  log(): string;
  /** Orders pebble has received ("POST /order-plz" requests). */
  orders(): number;
  /** The DNS server pebble validates DNS-01 against (challtestsrv), as `127.0.0.1:port`. */
  dns: string;
  /** challtestsrv's management API (`/set-txt`, `/clear-txt`), as `http://127.0.0.1:port`. */
  challtestsrv: string;
}

/** A child process whose output is kept; `exited` turns true when it ends. */
interface Logged {
  child: Deno.ChildProcess;
  log: () => string;
  exited: () => boolean;
  done: Promise<void>;
}

function spawnLogged(cmd: string, args: string[], env: Record<string, string> = {}): Logged {
  const child = new Deno.Command(cmd, { args, env, stdout: "piped", stderr: "piped" }).spawn();
  let text = "";
  let exited = false;
  void child.status.then(() => exited = true);
  const dec = new TextDecoder();
  const drain = async (s: ReadableStream<Uint8Array>) => {
    for await (const chunk of s) {
      text += dec.decode(chunk);
      // Bounded: the tests look at recent lines only.
      if (text.length > 1_000_000) text = text.slice(-500_000);
    }
  };
  const done = Promise.all([drain(child.stdout), drain(child.stderr)]).then(() => {});
  return { child, log: () => text, exited: () => exited, done };
}

async function stopAll(procs: Logged[]): Promise<void> {
  for (const p of procs) {
    try {
      p.child.kill("SIGTERM");
    } catch { /* already gone */ }
    await p.child.status;
    await p.done;
  }
}

/** What startPebble needs. */
export interface PebbleOptions {
  /** Where pebble sends HTTP-01 validations (Prox's challenge listener). */
  httpPort: number;
  /** For pebble's config file. */
  dir: string;
  /** Lifetime of issued certificates (default 5 years). */
  validitySeconds?: number;
  /** External account binding keys (kid → base64url MAC key): pebble then requires EAB. */
  eab?: Record<string, string>;
  /** Picks pebble's own ports (DNS, ACME, management, …, in that order); freePort by default. */
  pickPort?: () => number;
}

/** Thrown when a port picked for pebble or its DNS server was taken before it bound it. */
class PortTaken extends Error {}

/** How long pebble may take to come up: it generates two RSA keys first (0.3-2.5 s, more on a busy machine). */
const START_MS = 30_000;

const EXITED = Symbol("exited");

/**
 * Waits until `ready()` holds while `proc` runs. A process that exits, or logs a failed bind,
 * fails at once, as PortTaken when one of its ports was taken.
 */
async function whileRunning<T>(
  proc: Logged,
  what: string,
  ready: () => T | Promise<T>,
): Promise<NonNullable<T>> {
  // challtestsrv logs a failed bind and runs on without that listener; pebble exits.
  const failed = () => proc.exited() || proc.log().includes("address already in use");
  const got = await waitFor(async () => failed() ? EXITED : await ready(), {
    what,
    timeoutMs: START_MS,
  }).catch((err) => {
    // The log as it is when giving up (a CI run once timed out with only pebble's first line).
    throw new Error(`${err.message} (${what} log: ${proc.log()})`);
  });
  if (got !== EXITED) return got as NonNullable<T>;
  try {
    proc.child.kill("SIGTERM");
  } catch { /* exited */ }
  await proc.done;
  const log = proc.log();
  if (log.includes("address already in use")) throw new PortTaken(`${what}: ${log}`);
  throw new Error(`${what} exited: ${log}`);
}

/** Starts pebble validating HTTP-01 on `httpPort` (where Prox's challenge listener runs). */
export async function startPebble(opts: PebbleOptions): Promise<Pebble> {
  // Its own ports are picked free but bound later: another process may take one in between.
  for (let attempt = 1;; attempt++) {
    try {
      return await startOnce(opts);
    } catch (err) {
      if (!(err instanceof PortTaken) || attempt === 3) throw err;
    }
  }
}

async function startOnce(opts: PebbleOptions): Promise<Pebble> {
  const pick = opts.pickPort ?? freePort;
  const [dnsPort, acmePort, mgmtPort, ctsMgmt, tlsPort] = [pick(), pick(), pick(), pick(), pick()];
  const config = {
    pebble: {
      listenAddress: `127.0.0.1:${acmePort}`,
      managementListenAddress: `127.0.0.1:${mgmtPort}`,
      certificate: `${ROOT}/tests/fixtures/tls/cert.pem`,
      privateKey: `${ROOT}/tests/fixtures/tls/key.pem`,
      httpPort: opts.httpPort,
      tlsPort,
      ocspResponderURL: "",
      externalAccountBindingRequired: opts.eab !== undefined,
      ...(opts.eab ? { externalAccountMACKeys: opts.eab } : {}),
      ...(opts.validitySeconds ? { certificateValidityPeriod: opts.validitySeconds } : {}),
    },
  };
  const configPath = `${opts.dir}/pebble-config.json`;
  await Deno.writeTextFile(configPath, JSON.stringify(config));
  const dns = spawnLogged("pebble-challtestsrv", [
    "-defaultIPv4",
    "127.0.0.1",
    "-defaultIPv6",
    "",
    "-dns01",
    `127.0.0.1:${dnsPort}`,
    "-http01",
    "",
    "-https01",
    "",
    "-tlsalpn01",
    "",
    "-management",
    `127.0.0.1:${ctsMgmt}`,
  ]);
  const procs = [dns];
  const client = Deno.createHttpClient({ caCerts: [await Deno.readTextFile(PEBBLE_TLS_CA)] });
  /** A GET to pebble that a listener which accepts and never answers cannot hold up. */
  const get = (url: string) => fetch(url, { client, signal: AbortSignal.timeout(2_000) });
  try {
    // Up when its management API answers and its DNS server resolves a name (every name is
    // 127.0.0.1 here); it logs "Starting management server" before binding.
    await whileRunning(dns, "challtestsrv", async () => {
      const res = await fetch(`http://127.0.0.1:${ctsMgmt}/clear-txt`, {
        method: "POST",
        body: JSON.stringify({ host: "_acme-challenge.ready.test." }),
        signal: AbortSignal.timeout(2_000),
      });
      await res.body?.cancel();
      if (!res.ok) return null;
      const got = await Deno.resolveDns("ready.test", "A", {
        nameServer: { ipAddr: "127.0.0.1", port: dnsPort },
        signal: AbortSignal.timeout(1_000),
      });
      return got.includes("127.0.0.1");
    });
    const pebble = spawnLogged("pebble", [
      "-config",
      configPath,
      "-dnsserver",
      `127.0.0.1:${dnsPort}`,
    ], { PEBBLE_VA_NOSLEEP: "1", PEBBLE_WFE_NONCEREJECT: "0", PEBBLE_AUTHZREUSE: "0" });
    procs.unshift(pebble);
    // Pebble says where it listens just before it binds, after generating its CA keys.
    await whileRunning(pebble, "pebble", () => pebble.log().includes("ACME directory available"));
    const root = await whileRunning(pebble, "pebble's management interface", async () => {
      const res = await get(`https://127.0.0.1:${mgmtPort}/roots/0`);
      const body = await res.text();
      return res.ok && body.includes("BEGIN CERTIFICATE") ? body : null;
    });
    // The root this pebble generated, not one from a pebble that had the port before.
    const name = new X509Certificate(root).subject.match(/Pebble Root CA \w+/)?.[0];
    if (!name || !pebble.log().includes(`root issuer CN=${name} `)) {
      throw new PortTaken(`pebble's management port answered with another root (${name})`);
    }
    await whileRunning(pebble, "pebble's ACME directory", async () => {
      const res = await get(`https://127.0.0.1:${acmePort}/dir`);
      await res.body?.cancel();
      return res.ok;
    });
    if (pebble.exited()) throw new PortTaken(`pebble exited: ${pebble.log()}`);
    return {
      directoryUrl: `https://127.0.0.1:${acmePort}/dir`,
      root,
      log: pebble.log,
      orders: () => pebble.log().split("\n").filter((l) => l.includes("POST /order-plz")).length,
      dns: `127.0.0.1:${dnsPort}`,
      challtestsrv: `http://127.0.0.1:${ctsMgmt}`,
      [Symbol.asyncDispose]: () => stopAll(procs),
    };
  } catch (err) {
    await stopAll(procs);
    throw err;
  } finally {
    client.close();
  }
}
