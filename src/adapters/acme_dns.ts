// DNS-01 for ACME orders: publishes the TXT record through the operator's webhook (lego's httpreq
// protocol) or command (lego's exec), then waits until DNS servers answer with it before the CA
// is asked to look, so that a slow provider costs a wait here rather than a failed validation
// (which counts against the CA's rate limits).

import type { Logger } from "../ports.ts";
import type { AcmeConfig } from "./acme_order.ts";
import { parseResolver, txtHolds, zoneCandidates } from "../domain/acme_dns.ts";
import type { NameServer } from "../domain/acme_dns.ts";

/** `tls.acme.dns`. */
export type AcmeDnsConfig = NonNullable<AcmeConfig["dns"]>;

/** Publishes and removes one TXT value (other values at the same name stay). */
export interface DnsPublisher {
  present(fqdn: string, value: string): Promise<void>;
  cleanup(fqdn: string, value: string): Promise<void>;
}

/** How long one webhook call or command may take. */
const HOOK_TIMEOUT_MS = 60_000;
/** How much of a failed hook's output goes into the error. */
const OUTPUT_CHARS = 300;

const tail = (text: string) => {
  const t = text.trim().replace(/\s+/g, " ");
  return t.length > OUTPUT_CHARS ? `…${t.slice(-OUTPUT_CHARS)}` : t;
};

/**
 * Reads `stream` in the background keeping its last `max` bytes; `end(graceMs)` waits up to
 * `graceMs` for it to close (a child the hook left running may hold it open), then stops reading.
 */
function keepTail(stream: ReadableStream<Uint8Array>, max = 4096) {
  const reader = stream.getReader();
  let chunks: Uint8Array[] = [];
  let size = 0;
  const loop = (async () => {
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) return;
        chunks.push(value);
        size += value.length;
        if (size > 2 * max) {
          const all = new Uint8Array(size);
          let at = 0;
          for (const c of chunks) all.set(c, (at += c.length) - c.length);
          chunks = [all.slice(size - max)];
          size = max;
        }
      }
    } catch { /* cancelled */ }
  })();
  return async (graceMs: number): Promise<string> => {
    let t: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([loop, new Promise((r) => t = setTimeout(r, graceMs))]);
    clearTimeout(t);
    await reader.cancel().catch(() => {});
    await loop;
    const all = new Uint8Array(size);
    let at = 0;
    for (const c of chunks) all.set(c, (at += c.length) - c.length);
    return new TextDecoder().decode(all.slice(Math.max(0, size - max)));
  };
}

/** Up to `max` bytes of `body` read within `ms`, as text; the rest is cancelled. */
async function readHead(
  body: ReadableStream<Uint8Array> | null,
  max: number,
  ms: number,
): Promise<string> {
  if (!body) return "";
  const reader = body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  let t: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<null>((r) => t = setTimeout(() => r(null), ms));
  try {
    while (size < max) {
      const got = await Promise.race([reader.read(), late]);
      if (got === null || got.done) break;
      chunks.push(got.value);
      size += got.value.length;
    }
  } catch {
    /* what arrived is enough */
  } finally {
    clearTimeout(t);
    await reader.cancel().catch(() => {});
  }
  const all = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) all.set(c, (at += c.length) - c.length);
  return new TextDecoder().decode(all.slice(0, max));
}

/** How long output still open after a hook exited is read (a child it left may hold it). */
const OUTPUT_GRACE_MS = 200;

/**
 * `url` with the password of its userinfo (sent as Basic auth) and every query value (a provider's
 * `?api_key=…`) shown as `***`.
 */
function withoutPassword(url: string): string {
  try {
    const u = new URL(url);
    if (!u.password && !u.search) return url;
    if (u.password) u.password = "***";
    for (const k of [...u.searchParams.keys()]) u.searchParams.set(k, "***");
    return u.href.replaceAll("%2A%2A%2A", "***");
  } catch {
    return url;
  }
}

/** `text` without the password or a query value of `url` (as written or decoded) in it. */
function scrub(url: string, text: string): string {
  const secrets: string[] = [];
  try {
    const u = new URL(url);
    if (u.password) secrets.push(u.password);
    // Short values ("1", "json") are no secrets and would blot out the message.
    for (const v of u.searchParams.values()) if (v.length >= 4) secrets.push(v);
  } catch { /* none */ }
  for (const s of secrets) {
    let decoded = s;
    try {
      decoded = decodeURIComponent(s);
    } catch { /* as written */ }
    text = text.split(s).join("***").split(decoded).join("***");
    const encoded = encodeURIComponent(s);
    if (encoded !== s) text = text.split(encoded).join("***");
  }
  return text;
}

/** An error's message and its cause's ("fetch failed" alone does not say a certificate was refused). */
function withCause(err: unknown): string {
  const e = err as Error;
  const cause = (e?.cause as Error | undefined)?.message;
  return cause && cause !== e.message ? `${e.message}: ${cause}` : String(e?.message ?? err);
}

/** The publisher `dns` configures; `env` reads `token_env` (at each call: a rotated token is used). */
export function dnsPublisher(
  dns: AcmeDnsConfig,
  env: (name: string) => string | undefined = (n) => Deno.env.get(n),
  opts: { timeoutMs?: number } = {},
): DnsPublisher {
  const timeoutMs = opts.timeoutMs ?? HOOK_TIMEOUT_MS;
  // One call at a time, as lego makes them: a hook that reads a name's values and writes them
  // back (a wildcard and its base domain share the name) would lose one to the other.
  let queue: Promise<unknown> = Promise.resolve();
  const serial = (f: () => Promise<void>): Promise<void> => {
    const next = queue.then(f);
    queue = next.catch(() => {});
    return next;
  };
  if (dns.command) {
    const [cmd, ...fixed] = dns.command;
    const run = async (action: string, fqdn: string, value: string) => {
      let child: Deno.ChildProcess;
      try {
        // Its own process group (detached: a new session), so that the time limit ends the
        // children it started too, not just the shell.
        child = new Deno.Command(cmd, {
          args: [...fixed, action, fqdn, value],
          stdin: "null",
          stdout: "piped",
          stderr: "piped",
          detached: true,
        }).spawn();
      } catch (err) {
        throw new Error(`DNS command ${cmd} ${action} could not run: ${(err as Error).message}`);
      }
      const stdout = keepTail(child.stdout);
      const stderr = keepTail(child.stderr);
      let timer: ReturnType<typeof setTimeout> | undefined;
      let status = await Promise.race([
        child.status,
        new Promise<null>((r) => timer = setTimeout(() => r(null), timeoutMs)),
      ]);
      clearTimeout(timer);
      if (status === null) {
        try {
          Deno.kill(-child.pid, "SIGKILL");
        } catch {
          try {
            child.kill("SIGKILL");
          } catch { /* gone meanwhile */ }
        }
        status = await child.status;
      }
      const [out, errText] = await Promise.all([
        stdout(OUTPUT_GRACE_MS),
        stderr(OUTPUT_GRACE_MS),
      ]);
      if (!status.success) {
        const said = tail(errText) || tail(out);
        const how = status.signal
          ? `was killed (${status.signal}; ${timeoutMs / 1000} s limit)`
          : `exited with ${status.code}`;
        throw new Error(`DNS command ${cmd} ${action} ${fqdn} ${how}${said ? `: ${said}` : ""}`);
      }
    };
    return {
      present: (fqdn, value) => serial(() => run("present", fqdn, value)),
      cleanup: (fqdn, value) => serial(() => run("cleanup", fqdn, value)),
    };
  }
  // The action goes on the path; a query string (or fragment) stays where it was.
  const endpoint = (action: string) => {
    try {
      const u = new URL(dns.webhook!);
      u.pathname = `${u.pathname.replace(/\/+$/, "")}/${action}`;
      return u.href;
    } catch {
      return `${dns.webhook!.replace(/\/+$/, "")}/${action}`;
    }
  };
  const call = async (action: string, fqdn: string, value: string) => {
    const headers = new Headers(dns.headers ?? {});
    headers.set("content-type", "application/json");
    if (dns.token_env !== undefined) {
      const token = env(dns.token_env);
      if (!token) {
        throw new Error(
          `Environment variable ${dns.token_env} (tls.acme.dns.token_env) is not set`,
        );
      }
      headers.set("authorization", `Bearer ${token}`);
    }
    const url = endpoint(action);
    const shown = withoutPassword(url);
    let res: Response;
    // A private CA (ca_cert), read at each call: a replaced file is used without a reload.
    let client: Deno.HttpClient | undefined;
    try {
      if (dns.ca_cert !== undefined) {
        client = Deno.createHttpClient({ caCerts: [await Deno.readTextFile(dns.ca_cert)] });
      }
      res = await fetch(url, {
        method: "POST",
        headers,
        body: JSON.stringify({ fqdn, value }),
        signal: AbortSignal.timeout(timeoutMs),
        redirect: "manual",
        ...(client ? { client } : {}),
      });
    } catch (err) {
      client?.close();
      throw new Error(
        `DNS webhook ${shown} could not be reached: ${scrub(url, withCause(err))}`,
      );
    }
    try {
      if (res.ok) {
        // Nothing in the answer matters: one that never ends must not hold the order.
        await res.body?.cancel().catch(() => {});
        return;
      }
      const text = await readHead(res.body, 4096, 2_000);
      const location = res.headers.get("location");
      if (res.status >= 300 && res.status < 400 && location) {
        // Followed, a 301-303 would turn the POST into a GET (and drop Authorization elsewhere):
        // the hook would seem to have published a record it never saw.
        let to = location;
        try {
          to = withoutPassword(new URL(location, url).href);
        } catch { /* named as it came */ }
        throw new Error(
          `DNS webhook ${shown} answered ${res.status}, a redirect to ${to}: set tls.acme.dns.webhook to the URL it should be`,
        );
      }
      throw new Error(
        `DNS webhook ${shown} answered ${res.status}${text ? `: ${tail(text)}` : ""}`,
      );
    } finally {
      client?.close();
    }
  };
  return {
    present: (fqdn, value) => serial(() => call("present", fqdn, value)),
    cleanup: (fqdn, value) => serial(() => call("cleanup", fqdn, value)),
  };
}

/** One TXT lookup (each record's strings); NXDOMAIN and an empty answer are `[]`. */
export type TxtLookup = (name: string, server: NameServer) => Promise<string[][]>;
/** Resolves a name's NS records, then addresses, through the system resolver. */
export type ServerLookup = (
  name: string,
  type: "NS" | "A" | "AAAA" | "CNAME",
) => Promise<string[]>;

const LOOKUP_TIMEOUT_MS = 5_000;

const denoTxt: TxtLookup = async (name, server) => {
  try {
    return await Deno.resolveDns(name, "TXT", {
      nameServer: server,
      signal: AbortSignal.timeout(LOOKUP_TIMEOUT_MS),
    });
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return [];
    throw err;
  }
};

/** Lookups on `server`, or through the system resolver; NXDOMAIN is `[]`. */
const lookupOn = (server?: NameServer): ServerLookup => async (name, type) => {
  try {
    return await Deno.resolveDns(name, type as "NS", {
      ...(server ? { nameServer: server } : {}),
      signal: AbortSignal.timeout(LOOKUP_TIMEOUT_MS),
    });
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return [];
    throw err;
  }
};
const denoLookup = lookupOn();

/** A zone's name server (`name`) and its addresses; a `resolvers` entry is one of its own. */
export interface ServerGroup {
  name: string | null;
  addrs: NameServer[];
}

/** The name servers of the zone that holds `record`, each with its addresses on port 53. */
export async function authoritativeGroups(
  record: string,
  lookup: ServerLookup = denoLookup,
): Promise<ServerGroup[]> {
  for (const zone of zoneCandidates(record)) {
    const names = await lookup(zone, "NS").catch(() => []);
    if (names.length === 0) continue;
    const out: ServerGroup[] = [];
    for (const ns of names.slice(0, 8)) {
      const addrs: NameServer[] = [];
      for (const type of ["A", "AAAA"] as const) {
        for (const ipAddr of await lookup(ns, type).catch(() => [])) {
          addrs.push({ ipAddr, port: 53 });
        }
      }
      if (addrs.length > 0) out.push({ name: ns.replace(/\.$/, ""), addrs });
    }
    return out;
  }
  return [];
}

const addrText = (s: NameServer) => s.ipAddr.includes(":") ? `[${s.ipAddr}]` : s.ipAddr;
const groupText = (g: ServerGroup) =>
  g.name === null
    ? g.addrs.map((s) => `${addrText(s)}:${s.port}`).join(", ")
    : `${g.name} (${g.addrs.map((s) => s.ipAddr).join(", ")})`;

/**
 * Where a hook publishes `record` (absolute): where its CNAME chain ends, as lego hands its hooks
 * (EffectiveFQDN), so a delegated `_acme-challenge` is written in the zone it points to. Looked up
 * on the first of `resolvers`, else through the system resolver.
 */
export async function effectiveRecord(
  record: string,
  resolvers?: string[],
  lookup?: ServerLookup,
): Promise<string> {
  const server = resolvers?.map(parseResolver).find((s): s is NameServer => typeof s !== "string");
  const name = record.replace(/\.$/, "");
  const end = await cnameTarget(name, lookup ?? lookupOn(server));
  return end === name.toLowerCase() ? record : `${end}.`;
}

/** Where `name`'s CNAME chain ends (`name` itself without one), through the system resolver. */
async function cnameTarget(name: string, lookup: ServerLookup): Promise<string> {
  let at = name;
  for (let hop = 0; hop < 8; hop++) {
    const [next] = await lookup(at, "CNAME").catch(() => []);
    if (!next) break;
    at = next.replace(/\.$/, "").toLowerCase();
  }
  return at;
}

/**
 * Waits until every server (`resolvers`, else the zone's authoritative servers) answers `value`
 * for `fqdn`, polling; throws past `timeoutMs`, naming the servers that did not.
 */
export async function awaitTxt(
  fqdn: string,
  value: string,
  opts: {
    resolvers?: string[];
    timeoutMs: number;
    logger: Logger;
    pollMs?: number;
    txt?: TxtLookup;
    lookup?: ServerLookup;
    signal?: AbortSignal;
  },
): Promise<void> {
  let name = fqdn.replace(/\.$/, "");
  const txt = opts.txt ?? denoTxt;
  // A name server counts once any of its addresses answers the value: a host without an IPv6
  // route cannot reach the AAAA addresses most providers' servers have.
  let servers: ServerGroup[];
  if (opts.resolvers && opts.resolvers.length > 0) {
    servers = opts.resolvers.map(parseResolver).filter((s): s is NameServer =>
      typeof s !== "string"
    ).map((s) => ({ name: null, addrs: [s] }));
  } else {
    // `_acme-challenge` CNAMEd to another zone (delegated validation, acme-dns): the CA follows
    // it, and the CNAME's own zone's servers know nothing of the target.
    const cname = await cnameTarget(name, opts.lookup ?? denoLookup);
    if (cname !== name) {
      opts.logger.info("ACME DNS-01: the record is a CNAME; looking for it there", {
        record: fqdn,
        target: `${cname}.`,
      });
      name = cname;
    }
    servers = await authoritativeGroups(name, opts.lookup);
    if (servers.length === 0) {
      opts.logger.warn(
        "ACME DNS-01: no authoritative name servers found; asking the CA without checking",
        {
          record: fqdn,
        },
      );
      return;
    }
  }
  const deadline = performance.now() + opts.timeoutMs;
  const pollMs = opts.pollMs ?? 2_000;
  let missing = servers;
  let lastError = "";
  for (;;) {
    const seen = await Promise.all(missing.map(async (g) => {
      const each = await Promise.all(g.addrs.map(async (s) => {
        try {
          return txtHolds(await txt(name, s), value);
        } catch (err) {
          lastError = (err as Error).message;
          return false;
        }
      }));
      return each.some((b) => b);
    }));
    missing = missing.filter((_, i) => !seen[i]);
    if (missing.length === 0) return;
    const left = deadline - performance.now();
    if (left <= 0 || opts.signal?.aborted) {
      const where = missing.map(groupText).join("; ");
      throw new Error(
        `ACME DNS-01: the TXT record ${fqdn}${
          name === fqdn.replace(/\.$/, "") ? "" : ` (a CNAME to ${name}.)`
        } was not seen on ${where} within ${Math.round(opts.timeoutMs / 1000)} s${
          lastError ? ` (last error: ${lastError})` : ""
        }; raise tls.acme.dns.propagation_timeout if the provider is slow, or check resolvers`,
      );
    }
    await new Promise((r) => setTimeout(r, Math.min(pollMs, left)));
  }
}
