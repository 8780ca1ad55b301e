// TLS settings that need more than the schema: the certificate files' contents (through the
// environment's `certificate` reader) and the HSTS header's preload requirements.

import { certificateCovers, uncoveredHosts } from "./cert_names.ts";
import { parseRouteKey } from "../domain/router.ts";
import type { CertificateNames } from "./cert_names.ts";
import type { Config, UpstreamTlsConfig } from "./schema.ts";
import type { Report } from "./validate_route.ts";
import {
  certificateCommonName,
  certificateIsCa,
  certificateSubject,
  pemBlocks,
  revocationCheck,
} from "../domain/crl.ts";
import type { ValidateEnv } from "./validate.ts";
import { EMPTY_CERT_HINT, EMPTY_KEY_HINT } from "./validate.ts";

/** Keys Deno's TLS serves but browsers refuse: what the key is, which browsers refuse it. */
const BROWSERS_REFUSE: Record<string, [string, string]> = {
  "ed25519": ["Ed25519", "browsers (Chrome, Firefox, Safari) do"],
  "ec secp521r1": ["ECDSA P-521", "Chrome and other Chromium browsers do"],
};

/**
 * The files' contents: a key that is not the first certificate's is an error; expiry, and route
 * hosts the certificate does not name, warnings.
 */
export function validatePair(
  certPath: string,
  keyPath: string,
  o: {
    err: Report;
    warn: Report;
    env: ValidateEnv;
    config: Config;
    /** Where the pair is written (`tls`, or `tls.sni.N`). */
    at?: (string | number)[];
    /** The names of the other certificates served beside it (`tls.sni`); null: not checked. */
    others?: CertificateNames[] | null;
  },
): CertificateNames | undefined {
  const at = o.at ?? ["tls"];
  const pair = o.env.certificate?.(certPath, keyPath);
  if (!pair) return;
  if ("error" in pair) return void o.err([...at, pair.field], pair.error, pair.hint);
  if (!pair.keyMatches) {
    return void o.err(
      [...at, "key_path"],
      `Private key ${keyPath} does not belong to the first certificate in ${certPath}`,
      "cert_path must start with the server's own certificate, then its intermediates",
    );
  }
  const refusedBy = BROWSERS_REFUSE[pair.keyType ?? ""];
  if (refusedBy) {
    o.warn(
      [...at, "key_path"],
      `Private key ${keyPath} is ${refusedBy[0]}, which ${
        refusedBy[1]
      } not accept in TLS: their handshakes fail`,
      `Use an ECDSA P-256 or RSA key and certificate (curl and other OpenSSL clients accept ${
        refusedBy[0]
      })`,
    );
  }
  if (pair.missingIssuer) {
    o.warn(
      [...at, "cert_path"],
      `Certificate ${certPath} holds only the server's certificate, without the intermediate that issued it (${pair.missingIssuer}): clients that do not download it themselves (curl, Android, API clients) fail`,
      "Name the full chain: the certificate, then its intermediates (certbot: fullchain.pem, not cert.pem)",
    );
  }
  if (pair.mustStaple) {
    o.warn(
      [...at, "cert_path"],
      `Certificate ${certPath} asks clients to require a stapled OCSP answer (TLS Feature status_request, "OCSP must-staple"), which Prox cannot send: Firefox refuses it`,
      "Issue it without must-staple (certbot: without --must-staple; openssl: without tlsfeature=status_request)",
    );
  }
  const now = o.env.now?.();
  if (now !== undefined && pair.notAfter <= now) {
    o.warn(
      [...at, "cert_path"],
      `Certificate ${certPath} expired on ${new Date(pair.notAfter).toISOString()}`,
      "Clients reject it: renew it (or use tls.acme)",
    );
  } else if (now !== undefined && pair.notBefore !== undefined && pair.notBefore > now) {
    o.warn(
      [...at, "cert_path"],
      `Certificate ${certPath} is not valid before ${new Date(pair.notBefore).toISOString()}`,
      "Clients reject it until then: check the issuing machine's clock, or serve the previous certificate",
    );
  }
  if (pair.names && pair.names.dns.length === 0 && pair.names.ip.length === 0) {
    // `openssl req -x509 -subj /CN=example.com` without -addext: the tutorials' certificate.
    return void o.warn(
      [...at, "cert_path"],
      `Certificate ${certPath} has no subjectAltName: browsers and TLS libraries ignore the subject's CN and reject it for every host`,
      'Issue it with the names in subjectAltName (openssl req -x509 … -addext "subjectAltName=DNS:example.com")',
    );
  }
  if (o.others === null) return pair.names;
  for (const u of pair.names ? uncoveredHosts(o.config.routes, pair.names) : []) {
    if (o.others?.some((names) => certificateCovers(names, u.host))) continue;
    o.warn(
      u.index === undefined ? ["routes", u.route] : ["routes", u.route, "hosts", u.index],
      `Certificate ${certPath} does not name ${u.host}: HTTPS clients reject it for that host`,
      `Use a certificate whose subjectAltName includes it (\`openssl x509 -noout -ext subjectAltName -in ${certPath}\` lists its names)`,
    );
  }
  return pair.names;
}

/**
 * `tls.sni`: each pair's files as the main pair's; one whose every name an earlier one holds is
 * never chosen, and one that holds none of the routes' hosts (when every route names its hosts)
 * serves nothing. Returns the names of those that could be read.
 */
export function validateSni(
  sni: NonNullable<NonNullable<Config["tls"]>["sni"]>,
  o: { err: Report; warn: Report; env: ValidateEnv; config: Config },
): CertificateNames[] {
  const out: CertificateNames[] = [];
  const hosts = routeHosts(o.config.routes);
  /** Where each of `out` is written (tls.sni's index). */
  const written: number[] = [];
  sni.forEach((entry, i) => {
    const at = ["tls", "sni", i];
    let missing = false;
    for (const [k, what] of [["cert_path", "Certificate"], ["key_path", "Private key"]] as const) {
      if (!o.env.exists(entry[k])) {
        o.err([...at, k], `${what} file not found: ${entry[k]}`, FILE_HINT);
        missing = true;
      } else if (o.env.stat?.(entry[k])?.size === 0) {
        o.err(
          [...at, k],
          `${what} file is empty: ${entry[k]}`,
          k === "cert_path" ? EMPTY_CERT_HINT : EMPTY_KEY_HINT,
        );
        missing = true;
      }
    }
    if (missing) return;
    const names = validatePair(entry.cert_path, entry.key_path, { ...o, at, others: null });
    if (!names || names.dns.length + names.ip.length === 0) return;
    const own = [...names.dns, ...names.ip.map((ip) => ip.includes(":") ? `[${ip}]` : ip)];
    // An exact name is chosen over an earlier wildcard (chooseCertificate), a wildcard only over
    // a later one.
    const first = out.findIndex((earlier) =>
      own.every((n) => certificateCovers(earlier, n, !n.startsWith("*.")))
    );
    if (names.dns.length === 0) {
      o.warn(
        [...at, "cert_path"],
        `Certificate ${entry.cert_path} holds IP addresses only: clients connecting to an address send no server name (RFC 6066 §3), so they get the main certificate`,
        "Put the addresses in the main certificate (cert_path), which such clients get",
      );
    } else if (first >= 0) {
      o.warn(
        [...at, "cert_path"],
        `Certificate ${entry.cert_path} is never chosen: tls.sni.${
          written[first]
        } comes first and holds every name it holds`,
        "Remove it, or put it before the other",
      );
    } else if (hosts.length > 0 && !hosts.some((h) => coversHost(names, h))) {
      o.warn(
        [...at, "cert_path"],
        `Certificate ${entry.cert_path} holds none of the routes' hosts: it is served only for names no route answers`,
        `Add a route for its names (\`openssl x509 -noout -ext subjectAltName -in ${entry.cert_path}\` lists them), or remove it`,
      );
    }
    out.push(names);
    written.push(i);
  });
  return out;
}

/** The routes' hosts, or none when a route answers every host (its key names none). */
function routeHosts(routes: Config["routes"]): string[] {
  const out: string[] = [];
  for (const [key, route] of Object.entries(routes)) {
    const own = parseRouteKey(key).host;
    if (!own && !route.hosts?.length) return [];
    if (own) out.push(own);
    out.push(...(route.hosts ?? []));
  }
  return out;
}

/** Whether a client asking for `host` (`*.a.example`: any name under it) may get the names. */
function coversHost(names: CertificateNames, host: string): boolean {
  const h = host.toLowerCase().replace(/\.$/, "");
  if (!h.startsWith("*.")) return certificateCovers(names, h);
  return certificateCovers(names, h) ||
    names.dns.some((n) => n.toLowerCase().replace(/\.$/, "").endsWith(h.slice(1)));
}

const FILE_HINT = "Fix the path (a relative one starts from the working directory of prox)";

const YEAR_MS = 365 * 24 * 3600 * 1000;

/**
 * `preload` asks browsers to ship the host in their HSTS preload lists, which take a header only
 * with a max-age of a year or more and includeSubDomains (hstspreload.org): said, not silently sent.
 */
export function validateHsts(
  hsts: NonNullable<NonNullable<Config["tls"]>["hsts"]>,
  warn: Report,
): void {
  if (!hsts.preload) return;
  const missing = [
    ...(hsts.max_age < YEAR_MS ? ["max_age of at least 365d"] : []),
    ...(hsts.include_subdomains ? [] : ["include_subdomains: true"]),
  ];
  if (missing.length > 0) {
    warn(
      ["tls", "hsts", "preload"],
      `HSTS preload lists refuse this header: preload needs ${missing.join(" and ")}`,
      "Set them, or remove preload",
    );
  }
}

/**
 * Errors for a `tls.ca_cert` (a route's upstream, a forward_auth service) that is not there:
 * start-up failed reading it ("readfile './ca.pem'") after `prox validate` had said valid. One
 * that holds no PEM certificate failed every request to the upstream instead (502). Also the
 * client certificate and key (`client_cert`, `client_key`) presented to upstreams.
 */
export function checkUpstreamTlsFiles(
  config: Config,
  opts: { err: Report; warn?: Report; env: ValidateEnv },
): void {
  const check = (path: (string | number)[], tls: UpstreamTlsConfig | undefined) => {
    if (!tls) return;
    checkCaFile([...path, "tls", "ca_cert"], tls.ca_cert, { ...opts, peer: "the upstream's" });
    checkClientPair([...path, "tls"], tls, opts);
    // A CA added while skip-verify stayed on reads as verified, and nothing is.
    if (tls.ca_cert !== undefined && tls.insecure_skip_verify) {
      opts.warn?.(
        [...path, "tls", "insecure_skip_verify"],
        "tls.ca_cert is not used: insecure_skip_verify: true accepts any certificate",
        "Remove insecure_skip_verify to verify the upstream against ca_cert",
      );
    }
  };
  // A client certificate (or a CA) for a service reached over plain HTTP was never used.
  const auth = (path: (string | number)[], a: { url: string; tls?: UpstreamTlsConfig }) => {
    check(path, a.tls);
    if (a.tls && !/^https:\/\//i.test(a.url)) {
      opts.warn?.(
        [...path, "tls"],
        "tls has no effect: the forward_auth url is not https://",
        "Use an https:// url, or remove tls",
      );
    }
  };
  if (config.forward_auth) auth(["forward_auth"], config.forward_auth);
  for (const [key, route] of Object.entries(config.routes)) {
    if ("tls" in route) check(["routes", key], route.tls);
    if (route.forward_auth) auth(["routes", key, "forward_auth"], route.forward_auth);
  }
}

/**
 * A client certificate without its key (or the other way round), either file missing, or one
 * that holds no PEM of its kind: each failed every handshake with the upstream (502).
 */
function checkClientPair(
  at: (string | number)[],
  tls: UpstreamTlsConfig,
  opts: { err: Report; warn?: Report; env: ValidateEnv },
): void {
  const { client_cert: cert, client_key: key } = tls;
  if (cert === undefined && key === undefined) return;
  if (cert === undefined || key === undefined) {
    const missing = cert === undefined ? "client_cert" : "client_key";
    opts.err(
      [...at, cert === undefined ? "client_key" : "client_cert"],
      `tls.${missing} is missing: a client certificate needs its private key and the other way ` +
        "round",
      `Add tls.${missing} (a PEM file)`,
    );
    return;
  }
  let failed = false;
  const fail: Report = (p, m, h) => {
    failed = true;
    opts.err(p, m, h);
  };
  const pem = (k: "client_cert" | "client_key", file: string, marker: RegExp, kind: string) => {
    const text = readPem([...at, k], file, {
      err: fail,
      env: opts.env,
      what: kind,
      directoryHint: "Name the PEM file",
      der: `openssl ${k === "client_cert" ? "x509" : "pkey"} -inform DER -in ${file} -out ${
        k === "client_cert" ? "client.pem" : "client.key"
      }`,
    });
    if (text === undefined) return;
    if (
      k === "client_key" &&
      // PKCS#8, or the traditional form (openssl genrsa -traditional -aes256, openssl ec -aes256)
      /-----BEGIN ENCRYPTED PRIVATE KEY-----|^Proc-Type: 4,ENCRYPTED/m.test(text)
    ) {
      fail(
        [...at, k],
        `${file} is encrypted: Prox cannot ask for its passphrase`,
        `Decrypt it into a file only Prox can read: openssl pkey -in ${file} -out client.key`,
      );
    } else if (!marker.test(text)) {
      const swapped = k === "client_cert"
        ? /-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(text)
        : text.includes("-----BEGIN CERTIFICATE-----");
      fail(
        [...at, k],
        `${file} holds no PEM ${kind.toLowerCase()} (${
          k === "client_cert" ? "-----BEGIN CERTIFICATE-----" : "-----BEGIN PRIVATE KEY-----"
        })${swapped ? `: it holds a ${k === "client_cert" ? "private key" : "certificate"}` : ""}`,
        swapped ? "Swap tls.client_cert and tls.client_key" : `Name the PEM ${kind.toLowerCase()}`,
      );
    }
  };
  pem("client_cert", cert, /-----BEGIN CERTIFICATE-----/, "Client certificate");
  pem("client_key", key, /-----BEGIN (RSA |EC )?PRIVATE KEY-----/, "Client key");
  // A key of another certificate (a rotation that replaced one file of the two): every handshake
  // failed with "unsupported protocol", was retried and counted against the upstream's health.
  const pair = failed ? undefined : opts.env.certificate?.(cert, key);
  if (pair && "keyMatches" in pair && !pair.keyMatches) {
    opts.err(
      [...at, "client_key"],
      `${key} is not the private key of the first certificate in ${cert}`,
      "client_cert starts with the client's own certificate, then its intermediates; for a pair, " +
        "`openssl x509 -noout -pubkey -in CERT` and `openssl pkey -pubout -in KEY` print the same",
    );
  }
  if (pair && "keyMatches" in pair && pair.version === 1 && opts.warn) {
    opts.warn(
      [...at, "client_cert"],
      `Client certificate ${cert} is X.509 version 1: Deno's HTTP client cannot present it, so ` +
        "requests that go over HTTP/2 and WebSocket connections to the upstream fail",
      "Issue it again as version 3: openssl x509 -req … -extfile <(echo " +
        "extendedKeyUsage=clientAuth)",
    );
  }
  // Out of its validity every upstream that checks it refuses the handshake (502).
  const now = opts.env.now?.();
  if (pair && "keyMatches" in pair && now !== undefined && opts.warn) {
    const when = pair.notAfter <= now
      ? `expired on ${new Date(pair.notAfter).toISOString()}`
      : pair.notBefore !== undefined && pair.notBefore > now
      ? `is not valid before ${new Date(pair.notBefore).toISOString()}`
      : null;
    if (when) {
      opts.warn(
        [...at, "client_cert"],
        `Client certificate ${cert} ${when}`,
        "Upstreams that ask for it refuse it: renew it",
      );
    }
  }
}

/**
 * Errors for a CA file (`ca_cert`) that is missing, a directory, not UTF-8 or without a PEM
 * certificate; `peer` names whose certificate it vouches for ("the upstream's").
 */
export function checkCaFile(
  at: (string | number)[],
  ca: string | undefined,
  opts: { err: Report; env: ValidateEnv; peer: string },
): void {
  if (ca === undefined) return;
  const hint = `Name the PEM file of the CA that issued ${opts.peer} certificate`;
  const text = readPem(at, ca, {
    ...opts,
    what: "CA certificate",
    directoryHint: hint,
    der: `openssl x509 -inform DER -in ${ca} -out ca.pem`,
  });
  if (text !== undefined && !text.includes("-----BEGIN CERTIFICATE-----")) {
    opts.err(
      at,
      `${ca} holds no PEM certificate (-----BEGIN CERTIFICATE-----): ${opts.peer} certificate ` +
        "would be rejected",
      hint,
    );
  }
}

/**
 * `tls.client_auth.crl_file`: PEM revocation lists that decode, each signed by a certificate of
 * `caFile`; one past its next update is warned about (its issuer's clients are refused, or with
 * `crl_expired: allow` ones it would have revoked since may get in).
 */
export function checkCrlFile(
  at: (string | number)[],
  file: string | undefined,
  opts: { err: Report; warn: Report; env: ValidateEnv; caFile?: string; allowExpired?: boolean },
): void {
  if (file === undefined) return;
  const text = readPem(at, file, {
    ...opts,
    what: "Certificate revocation list",
    directoryHint: "Name the PEM file of the revocation lists (-----BEGIN X509 CRL-----)",
    der: `openssl crl -inform DER -in ${file} -out crl.pem`,
  });
  if (text === undefined) return;
  try {
    const check = revocationCheck(text);
    const ca = opts.caFile === undefined ? undefined : opts.env.readText?.(opts.caFile);
    // (A CA file that cannot be read is ca_cert's error.)
    if (ca && "text" in ca && opts.env.unsignedLists) {
      for (const why of opts.env.unsignedLists(text, ca.text)) {
        opts.err(
          at,
          `${file}: ${why}`,
          `Use the list a CA of ca_cert publishes (openssl crl -in ${file} -CAfile ${opts.caFile} -noout says "verify OK"); an intermediate's list needs the intermediate's certificate in ca_cert beside the root`,
        );
      }
    }
    if (ca && "text" in ca) missingLists(at, file, ca.text, check.issuers, opts.warn);
    const now = opts.env.now?.();
    // Per issuer: an old list beside a current one of the same CA leaves it up to date.
    const due = now === undefined ? null : check.outOfDate(now);
    if (due !== null) {
      opts.warn(
        at,
        `${file} is out of date: its issuer promised a new list by ${new Date(due).toISOString()}` +
          (opts.allowExpired
            ? " (crl_expired: allow: clients it would have revoked since may still get in)"
            : ": client certificates from that issuer are refused until it is replaced"),
        "Fetch the current list from the CA and replace the file (Prox reloads it)",
      );
    }
  } catch (e) {
    opts.err(
      at,
      `${file} holds no usable revocation list: ${e instanceof Error ? e.message : e}`,
      "Name a PEM file of X509 CRLs (openssl crl -in it -noout -text shows one)",
    );
  }
}

/**
 * Warns about each certificate of ca_cert without a list in `crl_file`: a client whose chain holds
 * a certificate it issued is refused, as nginx's ssl_crl refuses it (every certificate below the
 * trust anchor is checked: OpenSSL's X509_V_FLAG_CRL_CHECK_ALL, "unable to get certificate CRL").
 */
function missingLists(
  at: (string | number)[],
  file: string,
  caText: string,
  issuers: ReadonlySet<string>,
  warn: Report,
): void {
  for (const der of pemBlocks(caText, "CERTIFICATE")) {
    let subject: string;
    let name: string | null;
    try {
      // (A client's own certificate pinned in ca_cert issues no chain that needs a list.)
      if (!certificateIsCa(der)) continue;
      subject = certificateSubject(der);
      name = certificateCommonName(der);
    } catch {
      continue; // ca_cert's own check says what is wrong with it
    }
    if (issuers.has(subject)) continue;
    const who = name === null ? "a CA of ca_cert without a CN" : `"${name}" (a CA of ca_cert)`;
    warn(
      at,
      `${file} has no list of ${who}: client certificates whose chain holds a certificate it ` +
        "issued are refused (nothing says that one was not revoked)",
      `Add the CRL of ${
        name === null ? "that CA" : `"${name}"`
      } to the file (e.g. cat root.crl intermediate.crl > ${file}), or remove the CA from ca_cert if it issues no client chains`,
    );
  }
}

/**
 * A PEM file's text, or undefined when it is missing, a directory or not UTF-8 (each reported at
 * `at`), or cannot be read here (a pipe, or no reader).
 */
function readPem(
  at: (string | number)[],
  file: string,
  o: { err: Report; env: ValidateEnv; what: string; directoryHint: string; der: string },
): string | undefined {
  if (!o.env.exists(file)) {
    o.err(at, `${o.what} file not found: ${file}`, FILE_HINT);
    return undefined;
  }
  const st = o.env.stat?.(file);
  if (st?.isDirectory) {
    o.err(at, `${o.what} ${file} is a directory, not a PEM file`, o.directoryHint);
    return undefined;
  }
  // A pipe (`<(…)`, a FIFO) gives its text once, to the start-up that reads it.
  if (st?.isFile === false) return undefined;
  const read = o.env.readText?.(file);
  if (read === undefined) return undefined;
  if ("error" in read) {
    const binary = / is not UTF-8 text$/.test(read.error);
    o.err(
      at,
      binary ? `${file} is binary (DER), not PEM` : read.error,
      binary ? `Convert it: ${o.der}` : read.hint,
    );
    return undefined;
  }
  return read.text;
}

/**
 * `tls.acme.on_demand`: an `ask` endpoint is required (without one anyone who points a name at
 * Prox makes it order certificates, as Caddy warns), and it must be an http(s) URL; only Prox's
 * engine reads the ClientHello that triggers an order.
 */
export function validateOnDemand(
  onDemand: NonNullable<NonNullable<NonNullable<Config["tls"]>["acme"]>["on_demand"]>,
  o: { err: Report; warn: Report; config: Config },
): void {
  const at = ["tls", "acme", "on_demand"];
  if (onDemand.ask === undefined) {
    o.err(
      at,
      "on_demand needs an ask endpoint: without one, anyone who points a name at Prox makes it order certificates",
      'Add ask: "http://127.0.0.1:9000/allowed" (GET ?domain=<name>; 200 allows the name)',
    );
  } else {
    let url: URL | null = null;
    try {
      url = new URL(onDemand.ask);
    } catch { /* reported below */ }
    if (!url || (url.protocol !== "https:" && url.protocol !== "http:")) {
      o.err(
        [...at, "ask"],
        `ask URL "${onDemand.ask}" is not an http(s) URL`,
        "Use a URL such as http://127.0.0.1:9000/allowed",
      );
    }
  }
  if (o.config.protocols.http1_engine === "deno") {
    o.err(
      at,
      "tls.acme.on_demand needs Prox's own engines: Deno's HTTP server takes one certificate and shows no ClientHello",
      "Remove http1_engine: deno",
    );
  } else if (o.config.protocols.http3_enabled) {
    o.warn(
      at,
      "HTTP/3 serves only the main certificate (Deno's QUIC takes one): clients that ask HTTP/3 " +
        "for an on-demand name fail there and fall back to HTTP/2",
      "Leave HTTP/3 off, or accept the fallback",
    );
  }
}
