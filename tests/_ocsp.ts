// An OCSP responder for tests: OpenSSL's (`openssl ocsp -port 0`) answering from an index of the
// test CA's certificates, behind a counting relay on 127.0.0.1 (which can also be stopped).

import { run, waitFor } from "./_harness.ts";

const TLS = new URL("./fixtures/tls/", import.meta.url).pathname;

/** A running responder; dispose to stop it. */
export interface TestOcsp extends AsyncDisposable {
  /** Where to POST requests (the relay). */
  url: string;
  /** Requests the relay has passed on. */
  requests(): number;
}

/**
 * Starts `openssl ocsp` for the CA `ca` (PEM file; key `caKey`) in `dir`, signing with `signer`
 * (default: the CA itself) and knowing `valid` and `revoked` (certificate files).
 */
export async function startOcsp(o: {
  dir: string;
  valid?: string[];
  revoked?: string[];
  ca?: string;
  caKey?: string;
  signer?: { cert: string; key: string };
  /** -nmin: minutes to nextUpdate (none: no nextUpdate). */
  nmin?: number;
  /** -rsigopt values: how the answers are signed ("rsa_padding_mode:pss"). */
  rsigopt?: string[];
  /** -rmd: the answers' signature digest ("sha384"). */
  rmd?: string;
  /** Runs with the responder's URL known, before the index is read (to issue certificates naming it). */
  prepare?: (url: string) => Promise<void>;
}): Promise<TestOcsp> {
  // The relay first: its URL is the responder's, for certificates `prepare` issues.
  let port = 0;
  let count = 0;
  const relay = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    count++;
    // openssl answers one connection at a time and closes it: no keep-alive to hold.
    const res = await fetch(`http://127.0.0.1:${port}/`, {
      method: "POST",
      headers: { "content-type": "application/ocsp-request" },
      body: await req.arrayBuffer(),
    });
    return new Response(await res.arrayBuffer(), {
      status: res.status,
      headers: { "content-type": "application/ocsp-response" },
    });
  });
  const url = `http://127.0.0.1:${relay.addr.port}/`;
  try {
    await o.prepare?.(url);
    return await startResponder(o, relay, url, (p) => port = p, () => count);
  } catch (err) {
    await relay.shutdown();
    throw err;
  }
}

async function startResponder(
  o: Parameters<typeof startOcsp>[0],
  relay: Deno.HttpServer<Deno.NetAddr>,
  url: string,
  setPort: (port: number) => void,
  requests: () => number,
): Promise<TestOcsp> {
  const ca = o.ca ?? `${TLS}ca.pem`;
  const caKey = o.caKey ?? `${TLS}ca.key`;
  // Named by the relay's port: several responders may share a directory.
  const db = `${o.dir}/ocsp-${relay.addr.port}-index.txt`;
  const cnf = `${o.dir}/ocsp-${relay.addr.port}.cnf`;
  await Deno.writeTextFile(db, "");
  await Deno.writeTextFile(
    cnf,
    `[ca]\ndefault_ca=d\n[d]\ndatabase=${db}\ndefault_md=sha256\npolicy=p\n[p]\ncommonName=supplied\n`,
  );
  for (const [flag, files] of [["-valid", o.valid ?? []], ["-revoke", o.revoked ?? []]] as const) {
    for (const f of files) {
      const r = await run("openssl", [
        "ca",
        "-batch",
        "-config",
        cnf,
        "-cert",
        ca,
        "-keyfile",
        caKey,
        flag,
        f,
      ]);
      if (r.code !== 0) throw new Error(`openssl ca ${flag} ${f}: ${r.stderr}`);
    }
  }
  const signer = o.signer ?? { cert: ca, key: caKey };
  const child = new Deno.Command("openssl", {
    args: [
      "ocsp",
      ...["-port", "0", "-index", db, "-CA", ca, "-rsigner", signer.cert, "-rkey", signer.key],
      ...(o.nmin !== undefined ? ["-nmin", String(o.nmin)] : []),
      ...(o.rsigopt ?? []).flatMap((v) => ["-rsigopt", v]),
      ...(o.rmd !== undefined ? ["-rmd", o.rmd] : []),
    ],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let log = "";
  const drain = async (s: ReadableStream<Uint8Array>) => {
    for await (const c of s.pipeThrough(new TextDecoderStream())) log = (log + c).slice(-20_000);
  };
  const done = Promise.all([drain(child.stdout), drain(child.stderr)]);
  try {
    setPort(
      await waitFor(() => Number(/ACCEPT \S*:(\d+)/.exec(log)?.[1] ?? 0), { what: "openssl ocsp" }),
    );
  } catch (err) {
    child.kill("SIGKILL");
    await child.status;
    await done;
    throw new Error(`${(err as Error).message}: ${log}`);
  }
  return {
    url,
    requests,
    async [Symbol.asyncDispose]() {
      await relay.shutdown();
      try {
        child.kill("SIGTERM");
      } catch { /* gone */ }
      await child.status;
      await done;
    },
  };
}
