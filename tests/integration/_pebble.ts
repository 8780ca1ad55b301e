// Runs Debian's pebble (Let's Encrypt's test CA) and pebble-challtestsrv (its mock DNS, which
// resolves every name to 127.0.0.1) on loopback with free ports, for the ACME tests.

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
}

function spawnLogged(
  cmd: string,
  args: string[],
  env: Record<string, string> = {},
): { child: Deno.ChildProcess; log: () => string; done: Promise<void> } {
  const child = new Deno.Command(cmd, { args, env, stdout: "piped", stderr: "piped" }).spawn();
  let text = "";
  const dec = new TextDecoder();
  const drain = async (s: ReadableStream<Uint8Array>) => {
    for await (const chunk of s) {
      text += dec.decode(chunk);
      // Bounded: the tests look at recent lines only.
      if (text.length > 1_000_000) text = text.slice(-500_000);
    }
  };
  const done = Promise.all([drain(child.stdout), drain(child.stderr)]).then(() => {});
  return { child, log: () => text, done };
}

/** Starts pebble validating HTTP-01 on `httpPort` (where Prox's challenge listener runs). */
export async function startPebble(
  opts: {
    httpPort: number;
    dir: string; /** Lifetime of issued certificates (default 5 years). */
    validitySeconds?: number;
  },
): Promise<Pebble> {
  const dnsPort = freePort();
  const [acmePort, mgmtPort, ctsMgmt, tlsPort] = [freePort(), freePort(), freePort(), freePort()];
  const config = {
    pebble: {
      listenAddress: `127.0.0.1:${acmePort}`,
      managementListenAddress: `127.0.0.1:${mgmtPort}`,
      certificate: `${ROOT}/tests/fixtures/tls/cert.pem`,
      privateKey: `${ROOT}/tests/fixtures/tls/key.pem`,
      httpPort: opts.httpPort,
      tlsPort,
      ocspResponderURL: "",
      externalAccountBindingRequired: false,
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
  const pebble = spawnLogged("pebble", [
    "-config",
    configPath,
    "-dnsserver",
    `127.0.0.1:${dnsPort}`,
  ], { PEBBLE_VA_NOSLEEP: "1", PEBBLE_WFE_NONCEREJECT: "0", PEBBLE_AUTHZREUSE: "0" });
  const stop = async () => {
    for (const p of [pebble, dns]) {
      try {
        p.child.kill("SIGTERM");
      } catch { /* already gone */ }
      await p.child.status;
      await p.done;
    }
  };
  const client = Deno.createHttpClient({ caCerts: [await Deno.readTextFile(PEBBLE_TLS_CA)] });
  try {
    await waitFor(() => dns.log().includes("Starting management server"), { what: "challtestsrv" });
    const root = await waitFor(async () => {
      const res = await fetch(`https://127.0.0.1:${mgmtPort}/roots/0`, { client });
      const body = await res.text();
      return res.ok && body.includes("BEGIN CERTIFICATE") ? body : null;
      // A CI run once gave up after 10 s; the log is read when giving up, not when starting.
    }, { what: "pebble", timeoutMs: 30_000 }).catch((err) => {
      throw new Error(`${err.message} (pebble log: ${pebble.log()})`);
    });
    const dir = await fetch(`https://127.0.0.1:${acmePort}/dir`, { client });
    await dir.body?.cancel();
    if (!dir.ok) throw new Error(`pebble directory answered ${dir.status}`);
    return {
      directoryUrl: `https://127.0.0.1:${acmePort}/dir`,
      root,
      log: pebble.log,
      orders: () => pebble.log().split("\n").filter((l) => l.includes("POST /order-plz")).length,
      [Symbol.asyncDispose]: stop,
    };
  } catch (err) {
    await stop();
    throw err;
  } finally {
    client.close();
  }
}
