// Reads the config: from its file (or the embedded text when there is none), with the process
// environment for `${VAR}` expansion, plus the files the pure snapshot builder needs.

import { createPrivateKey, X509Certificate } from "node:crypto";
import { loadConfigText } from "../config/load.ts";
import type { LoadResult } from "../config/load.ts";
import { pemBlock, wholeChain } from "./pem_chain.ts";
import { unsignedLists } from "./crl_verify.ts";
import type { ConfigIssue } from "../config/parse.ts";
import type { Config, UpstreamTlsConfig } from "../config/schema.ts";
import { pageFiles } from "../config/validate_pages.ts";
import { jwtFiles } from "../config/validate_jwt.ts";
import { ipAccessFiles } from "../config/validate_access.ts";
import type { CertificateNames } from "../config/cert_names.ts";
import { mustStaple } from "../domain/x509_names.ts";

/** Where the config comes from: a file, or embedded text when no file exists. */
export type ConfigSource = { path: string } | { text: string; name: string };

/** What config loading may ask of the process: environment variables, whether a file exists. */
export const denoEnv = {
  env(name: string): string | undefined {
    try {
      return Deno.env.get(name);
    } catch {
      return undefined; // `{env.}`, `{env.A=B}`: no variable can have such a name (Deno throws)
    }
  },
  exists(path: string): boolean {
    try {
      Deno.statSync(path);
      return true;
    } catch {
      return false;
    }
  },
  stat(path: string): { isFile: boolean; isDirectory: boolean; size: number } | null {
    try {
      const st = Deno.statSync(path);
      return { isFile: st.isFile, isDirectory: st.isDirectory, size: st.size };
    } catch {
      return null;
    }
  },
  certificate: readCertificatePair,
  unsignedLists,
  readText(path: string): { text: string } | { error: string; hint: string } {
    try {
      return { text: utf8.decode(readFileCappedSync(path)) };
    } catch (err) {
      if (err instanceof FileTooLarge) {
        return { error: `Cannot read ${path}: ${err.message}`, hint: TOO_LARGE_HINT };
      }
      if (err instanceof TypeError) {
        return { error: `${path} is not UTF-8 text`, hint: "Save the page as UTF-8" };
      }
      if (err instanceof Deno.errors.IsADirectory) {
        return { error: `${path} is a directory, not a file`, hint: "Name the file itself" };
      }
      return {
        error: `Cannot read ${path}: ${
          String(err instanceof Error ? err.message : err).replace(/: (?:readfile|open) '.*'$/, "")
        }`,
        hint: "Give the user Prox runs as read access to the file and its directories",
      };
    }
  },
  now: () => Date.now(),
};

const utf8 = new TextDecoder("utf-8", { fatal: true });
const lossy = new TextDecoder();

/**
 * The most Prox reads of a file a config names (htpasswd files, CA bundles, pages, keys): a
 * device named by mistake (`users_file: /dev/zero`) was read until memory ran out.
 */
const MAX_FILE_BYTES = 64 * 1024 * 1024;
const TOO_LARGE_HINT = "Name the file itself (not a device): Prox reads at most 64 MiB of it";

/** A file a config names that is over MAX_FILE_BYTES, or (`size` null) went on being read. */
class FileTooLarge extends Error {
  constructor(size: number | null) {
    super(
      size === null
        ? "it gave more than 64 MiB without ending"
        : `it is ${size} bytes, over the 64 MiB Prox reads of a file`,
    );
  }
}

/** A file's bytes, at most MAX_FILE_BYTES (a regular file over it is not read at all). */
function readFileCappedSync(path: string): Uint8Array {
  using file = Deno.openSync(path);
  const st = file.statSync();
  if (st.isDirectory) throw new Deno.errors.IsADirectory("Is a directory (os error 21)");
  if (st.isFile && st.size > MAX_FILE_BYTES) throw new FileTooLarge(st.size);
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const chunk = new Uint8Array(st.isFile ? Math.max(st.size + 1, 4096) : 65536);
    const n = file.readSync(chunk);
    if (n === null) break;
    total += n;
    if (total > MAX_FILE_BYTES) throw new FileTooLarge(null);
    chunks.push(chunk.subarray(0, n));
  }
  return chunks.length === 1 ? chunks[0] : concat(chunks, total);
}

/** readFileCappedSync, without blocking the event loop; throws "Cannot read PATH: …" when over. */
async function readFileCapped(path: string): Promise<Uint8Array> {
  using file = await Deno.open(path);
  const st = await file.stat();
  if (st.isDirectory) throw new Deno.errors.IsADirectory("Is a directory (os error 21)");
  try {
    if (st.isFile && st.size > MAX_FILE_BYTES) throw new FileTooLarge(st.size);
    const chunks: Uint8Array[] = [];
    let total = 0;
    for (;;) {
      const chunk = new Uint8Array(st.isFile ? Math.max(st.size + 1, 4096) : 65536);
      const n = await file.read(chunk);
      if (n === null) break;
      total += n;
      if (total > MAX_FILE_BYTES) throw new FileTooLarge(null);
      chunks.push(chunk.subarray(0, n));
    }
    return chunks.length === 1 ? chunks[0] : concat(chunks, total);
  } catch (err) {
    throw err instanceof FileTooLarge ? new Error(`Cannot read ${path}: ${err.message}`) : err;
  }
}

function concat(chunks: Uint8Array[], total: number): Uint8Array {
  const out = new Uint8Array(total);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

type PairIssue = { error: string; field: "cert_path" | "key_path"; hint?: string };

/** The files a certificate directory usually holds (certbot, Kubernetes TLS secrets, others). */
const PEM_NAMES: Record<PairIssue["field"], string[]> = {
  cert_path: ["fullchain.pem", "cert.pem", "tls.crt", "server.crt"],
  key_path: ["privkey.pem", "key.pem", "tls.key", "server.key"],
};

/** A certificate or key file's text, or why it cannot be read (permissions, a directory). */
function readPem(path: string, field: PairIssue["field"]): string | PairIssue {
  try {
    return lossy.decode(readFileCappedSync(path));
  } catch (err) {
    if (err instanceof FileTooLarge) {
      return { field, error: `Cannot read ${path}: ${err.message}`, hint: TOO_LARGE_HINT };
    }
    // `key_path: /etc/letsencrypt/live/example.com`: the directory, not the file in it.
    if (err instanceof Deno.errors.IsADirectory) {
      const inside = PEM_NAMES[field].map((n) => `${path.replace(/\/+$/, "")}/${n}`)
        .find((p) => {
          try {
            return Deno.statSync(p).isFile;
          } catch {
            return false;
          }
        });
      return {
        field,
        error: `${path} is a directory, not a file`,
        hint: inside
          ? `Name the file itself: ${inside}`
          : `Name the file itself (${
            field === "key_path" ? "a PEM private key" : "a PEM certificate chain"
          })`,
      };
    }
    return {
      field,
      // "Permission denied (os error 13)", without Deno's ": readfile '<path>'" after it.
      error: `Cannot read ${path}: ${
        String(err instanceof Error ? err.message : err)
          .replace(/: (?:readfile|open) '.*'$/, "")
      }`,
      hint: err instanceof Deno.errors.PermissionDenied
        ? "Give the user Prox runs as read access to the file and its directories (certbot keeps keys readable by root only: chgrp and chmod g+rx its archive and live directories, or copy the files in a deploy hook)"
        : undefined,
    };
  }
}

/** The conversion to PEM of a binary (DER or PKCS#12) file, or undefined for a text one. */
function binaryHint(
  text: string,
  path: string,
  o: { der: string; p12: string; out: string },
): string | undefined {
  if (text.includes("-----BEGIN") || !text.includes("\uFFFD")) return undefined;
  return `${path} is binary (DER, or PKCS#12 .pfx/.p12), not PEM: convert it with ` +
    `\`openssl ${o.der} -inform DER -in ${path} -out ${o.out}\` ` +
    `(PKCS#12: \`openssl pkcs12 -in ${path} ${o.p12} -out ${o.out}\`)`;
}

/** The first certificate of a PEM chain and whether `keyPath` holds its private key. */
function readCertificatePair(
  certPath: string,
  keyPath: string,
):
  | {
    notBefore: number;
    notAfter: number;
    keyMatches: boolean;
    names: CertificateNames;
    keyType: string;
    missingIssuer?: string;
    mustStaple: boolean;
    version: number;
  }
  | PairIssue {
  let cert: X509Certificate;
  const pem = readPem(certPath, "cert_path");
  if (typeof pem !== "string") return pem;
  try {
    // The first certificate block (the file may also hold the key, which the listener skips).
    cert = new X509Certificate(pemBlock(pem, "CERTIFICATE")!);
  } catch {
    const keyText = (() => {
      try {
        return lossy.decode(readFileCappedSync(keyPath));
      } catch {
        return "";
      }
    })();
    const swapped = /PRIVATE KEY-----/.test(pem) && /BEGIN CERTIFICATE-----/.test(keyText);
    return {
      field: "cert_path",
      error: `Cannot read a PEM certificate from ${certPath}`,
      hint: swapped
        ? `${certPath} holds a private key and ${keyPath} a certificate: swap cert_path and key_path`
        : binaryHint(pem, certPath, { der: "x509", p12: "-nokeys", out: "cert.pem" }) ??
          "cert_path names a PEM file starting with -----BEGIN CERTIFICATE-----",
    };
  }
  if (!wholeChain(pem)) {
    return {
      field: "cert_path",
      error:
        `The certificate chain in ${certPath} is truncated or damaged (the listener cannot load it)`,
    };
  }
  let key: ReturnType<typeof createPrivateKey>;
  const keyPem = readPem(keyPath, "key_path");
  if (typeof keyPem !== "string") return keyPem;
  try {
    key = createPrivateKey(pemBlock(keyPem, "PRIVATE KEY")!);
  } catch {
    // Encrypted keys too: the listener has no passphrase to open them with.
    return {
      field: "key_path",
      error: `Cannot read an unencrypted PEM private key from ${keyPath}`,
      hint: /ENCRYPTED/.test(keyPem)
        ? `The key is encrypted and Prox has no passphrase: decrypt it (openssl pkey -in ${keyPath} -out key.pem) and name that file`
        : binaryHint(keyPem, keyPath, { der: "pkey", p12: "-nocerts -nodes", out: "key.pem" }) ??
          "key_path names a PEM file starting with -----BEGIN PRIVATE KEY----- (or RSA or EC PRIVATE KEY)",
    };
  }
  const unusable = unusableKey(key);
  if (unusable) {
    return {
      field: "key_path",
      error: `Private key ${keyPath} is ${unusable}: the TLS listener takes RSA of 2048 bits or ` +
        "more, ECDSA P-256, P-384 or P-521, or Ed25519",
    };
  }
  return {
    notBefore: Date.parse(cert.validFrom),
    notAfter: Date.parse(cert.validTo),
    keyMatches: cert.checkPrivateKey(key),
    names: sanNames(cert.subjectAltName),
    keyType: key.asymmetricKeyType === "ec"
      ? `ec ${key.asymmetricKeyDetails?.namedCurve}`
      : key.asymmetricKeyType ?? "unknown",
    missingIssuer: missingIssuer(pem, cert),
    mustStaple: mustStaple(cert.raw), // false for a malformed extension list
    version: x509Version(cert.raw),
  };
}

/**
 * A DER certificate's version (RFC 5280 §4.1): 1 when its TBSCertificate has no explicit `[0]`
 * version field (`openssl x509 -req` without extensions makes such certificates), else 1 + its
 * value.
 */
function x509Version(der: Uint8Array): number {
  // Skips a tag and its length (short or long form); returns where the content starts.
  const inside = (at: number) => {
    const len = der[at + 1];
    return at + 2 + (len & 0x80 ? len & 0x7f : 0);
  };
  const tbs = inside(0);
  const first = inside(tbs);
  if (der[first] !== 0xa0) return 1;
  const integer = inside(first); // INTEGER inside the explicit tag
  return der[inside(integer)] + 1;
}

/**
 * The issuer of a certificate alone in its file that names where to download its issuer (AIA "CA
 * Issuers", as public CAs' leaves do): its intermediate is missing. A leaf of a private CA
 * (mkcert's, a test CA's) names none, and its clients trust that CA itself.
 */
function missingIssuer(pem: string, cert: X509Certificate): string | undefined {
  const count = pem.match(/-----BEGIN CERTIFICATE-----/g)?.length ?? 0;
  if (count !== 1 || cert.issuer === cert.subject) return undefined;
  return /CA Issuers/.test(cert.infoAccess ?? "") ? cert.issuer.replace(/\n/g, ", ") : undefined;
}

/** `DNS:a.example, IP Address:127.0.0.1` → the DNS names and IP addresses. */
function sanNames(san: string | undefined): CertificateNames {
  const entries = (san ?? "").split(", ");
  const of = (prefix: string) =>
    entries.filter((e) => e.startsWith(prefix)).map((e) => e.slice(prefix.length));
  return { dns: of("DNS:"), ip: of("IP Address:") };
}

const TLS_CURVES = new Set(["prime256v1", "secp384r1", "secp521r1"]);

/**
 * What makes a key one Deno's TLS (rustls) refuses, or null: its listener then fails to start
 * with "failed to parse private key as RSA, ECDSA, or EdDSA" although the file is a fine key.
 */
function unusableKey(key: ReturnType<typeof createPrivateKey>): string | null {
  const type = key.asymmetricKeyType;
  const details = key.asymmetricKeyDetails;
  if (type === "rsa") {
    const bits = details?.modulusLength ?? 0;
    return bits >= 2048 ? null : `an RSA key of ${bits} bits`;
  }
  if (type === "ec") {
    return TLS_CURVES.has(details?.namedCurve ?? "") ? null : `on curve ${details?.namedCurve}`;
  }
  return type === "ed25519" ? null : `of type ${type}`;
}

/** `-c -`: the config comes from standard input, named this in messages. */
export const STDIN_NAME = "<stdin>";

/** Parses and validates config text (loadConfigText, or config_offthread.ts's worker). */
export type TextLoader = (text: string, file: string) => LoadResult | Promise<LoadResult>;

const inPlace: TextLoader = (text, file) => loadConfigText(text, { file, env: denoEnv });

/**
 * Reads and validates the config source; the path `-` is standard input (read once). `load`
 * parses and validates the text (default: here, on this thread).
 */
export async function loadSource(
  source: ConfigSource,
  opts: { load?: TextLoader } = {},
): Promise<LoadResult> {
  const load = opts.load ?? inPlace;
  if ("text" in source) {
    return { ...await load(source.text, source.name), text: source.text };
  }
  const stdin = source.path === "-";
  const file = stdin ? STDIN_NAME : source.path;
  let bytes: Uint8Array;
  try {
    bytes = stdin ? await readCapped(Deno.stdin) : await readConfigBytes(source.path);
  } catch (err) {
    throw configReadError(file, err);
  }
  const decoded = decodeConfig(bytes, file);
  if ("issue" in decoded) return { issues: [decoded.issue] };
  const loaded = await load(decoded.text, file);
  if (!stdin) besideConfig(loaded.issues, source.path);
  return { ...loaded, text: decoded.text };
}

/**
 * A relative path is looked up from the working directory (README "Config reference"), so
 * `prox serve -c /etc/prox/prox.yaml` started elsewhere (a service manager starts in `/`) misses
 * `./certs/…` kept beside the config. Where the missing path is there beside the config, the fix
 * says so instead of only "fix the path".
 */
function besideConfig(issues: ConfigIssue[], configPath: string): void {
  const slash = configPath.lastIndexOf("/");
  if (slash < 0) return;
  const dir = configPath.startsWith("/")
    ? configPath.slice(0, slash) || "/"
    : `${Deno.cwd()}/${configPath.slice(0, slash)}`;
  for (const issue of issues) {
    if (!issue.hint || !/working directory/.test(issue.hint)) continue;
    const missing = / not found: (.+)$/.exec(issue.message)?.[1];
    if (!missing || missing.startsWith("/")) continue;
    const beside = `${dir.replace(/\/+$/, "")}/${missing.replace(/^(?:\.\/)+/, "")}`;
    try {
      Deno.statSync(beside);
    } catch {
      continue;
    }
    if (Deno.realPathSync(dir) === Deno.cwd()) return;
    issue.hint = `${missing} is looked up from the working directory (${Deno.cwd()}), not from ` +
      `the config's; it is there beside the config: write ${beside}, or start prox in ${dir}`;
  }
}

/** Config bytes as text, or the issue that locates the first byte that is not UTF-8. */
export function decodeConfig(bytes: Uint8Array, file: string): { text: string } | {
  issue: ConfigIssue;
} {
  try {
    // Fatal: a Latin-1 byte would otherwise become U+FFFD in a route key or value, silently.
    // (A byte-order mark is dropped, so columns on the first line stay right.)
    return { text: new TextDecoder("utf-8", { fatal: true }).decode(bytes) };
  } catch {
    return { issue: notUtf8(file, bytes) };
  }
}

/**
 * The largest config Prox reads (README "Command line"): 4 MiB is tens of thousands of routes, and
 * the cap stops `-c /dev/zero`, or a log named by mistake, from filling memory.
 */
export const MAX_CONFIG_BYTES = 4 * 1024 * 1024;

/** A config over MAX_CONFIG_BYTES: a file of `size` bytes, or one (null) that went on being read. */
export class ConfigTooLarge extends Error {
  constructor(readonly size: number | null) {
    super(
      size === null
        ? "it gave more than 4 MiB (the most a config may have) without ending"
        : `it is ${size} bytes, over the 4 MiB a config may have`,
    );
    this.name = "ConfigTooLarge";
  }
}

/** Reads at most MAX_CONFIG_BYTES from `reader` (stdin, a pipe, a device) until it ends. */
export async function readCapped(
  reader: { read(p: Uint8Array): Promise<number | null> },
): Promise<Uint8Array> {
  const out = new Uint8Array(MAX_CONFIG_BYTES + 1);
  let length = 0;
  for (;;) {
    // One byte past the cap is room enough to tell "exactly 4 MiB" from "more".
    const n = await reader.read(out.subarray(length, Math.min(out.length, length + 65536)));
    if (n === null) return out.slice(0, length);
    length += n;
    if (length > MAX_CONFIG_BYTES) throw new ConfigTooLarge(null);
  }
}

/** A config file's bytes; a regular file over MAX_CONFIG_BYTES is refused before it is read. */
export async function readConfigBytes(path: string): Promise<Uint8Array> {
  using file = await Deno.open(path);
  const st = await file.stat();
  if (st.isDirectory) throw new Deno.errors.IsADirectory("Is a directory (os error 21)");
  if (st.isFile && st.size > MAX_CONFIG_BYTES) throw new ConfigTooLarge(st.size);
  return await readCapped(file); // a regular file that grows while it is read is refused too
}

/** A failed read of the config: what went wrong, as `prox validate` says it, and its fix. */
export class ConfigReadError extends Error {
  constructor(message: string, readonly hint: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "ConfigReadError";
  }
}

/**
 * A failed read of the config file said as `prox validate` says it (not the raw os error), with
 * its fix. A missing permission of Deno's own (`deno run` without -A) is left as it is: the CLI
 * says to run with -A.
 */
export function configReadError(file: string, err: unknown): Error {
  if (err instanceof ConfigReadError || err instanceof Deno.errors.NotCapable) return err;
  const [why, hint] = readFailure(file, err);
  return new ConfigReadError(`Cannot read config "${file}": ${why}`, hint, { cause: err });
}

const RIGHT_PATH = "pass the right path with --config FILE";

/** What went wrong reading `file` and how to fix it. */
function readFailure(file: string, err: unknown): [string, string] {
  if (err instanceof Deno.errors.NotFound) {
    const target = linkTarget(file);
    return target === null ? ["file not found", RIGHT_PATH] : [
      `it is a symbolic link to "${target}", which does not exist`,
      "create that file, or point the link (or --config) at the config file",
    ];
  }
  if (err instanceof Deno.errors.IsADirectory) {
    return [
      "it is a directory",
      `name the file in it, e.g. --config ${file.replace(/\/+$/, "")}/config.yaml`,
    ];
  }
  if (err instanceof Deno.errors.NotADirectory) {
    const blocker = fileOnTheWay(file);
    return [
      blocker === null
        ? "a part of its path is not a directory"
        : `"${blocker}" is not a directory`,
      RIGHT_PATH,
    ];
  }
  if (err instanceof Deno.errors.PermissionDenied) {
    return [
      "permission denied",
      "give the user Prox runs as read access to the file and search (x) access to its directories",
    ];
  }
  if (err instanceof Deno.errors.FilesystemLoop) {
    return [
      "its symbolic links form a loop",
      "point the symbolic link at the config file itself (ls -l shows where each link points)",
    ];
  }
  if (err instanceof ConfigTooLarge) {
    return [
      err.message,
      err.size === null
        ? "name a config file (not a device), or pipe in at most 4 MiB of YAML"
        : "name the config file itself: Prox reads at most 4 MiB of YAML",
    ];
  }
  // EIO, ENAMETOOLONG, …: the system's words, without Deno's ": open '<path>'" after them.
  const os = (err instanceof Error ? err.message : String(err)).replace(/: \w+ '.*'$/, "");
  return [os, "check the file and the disk it is on: the operating system refused to read it"];
}

/** Where a dangling symbolic link points, or null when `path` is not one. */
function linkTarget(path: string): string | null {
  try {
    return Deno.lstatSync(path).isSymlink ? Deno.readLinkSync(path) : null;
  } catch {
    return null;
  }
}

/** The first prefix of `path` that exists and is not a directory (`a.yaml` in `a.yaml/b`). */
function fileOnTheWay(path: string): string | null {
  const parts = path.split("/");
  for (let i = 1; i < parts.length; i++) {
    const prefix = parts.slice(0, i).join("/");
    if (prefix === "") continue;
    try {
      if (!Deno.statSync(prefix).isDirectory) return prefix;
    } catch {
      return null;
    }
  }
  return null;
}

/** Where the first byte that is not UTF-8 sits, as an issue. */
function notUtf8(file: string, bytes: Uint8Array): ConfigIssue {
  const lossy = new TextDecoder().decode(bytes);
  const at = Math.max(0, lossy.indexOf("\uFFFD"));
  const before = lossy.slice(0, at);
  return {
    severity: "error",
    file,
    line: before.split("\n").length,
    col: at - before.lastIndexOf("\n"),
    path: "",
    message: "The config is not UTF-8 text",
    hint: "Save the file as UTF-8 (YAML is UTF-8)",
  };
}

/**
 * Reads files a config refers to that the pure snapshot builder needs (CA certificates, error
 * pages, htpasswd files).
 */
export async function readReferencedFiles(config: Config): Promise<Map<string, string>> {
  const files = new Map<string, string>();
  for (const page of pageFiles(config)) {
    files.set(page, utf8.decode(await readFileCapped(page)));
  }
  const tlsFiles = async (tls: UpstreamTlsConfig | undefined) => {
    for (const file of [tls?.ca_cert, tls?.client_cert, tls?.client_key]) {
      if (file && !files.has(file)) files.set(file, lossy.decode(await readFileCapped(file)));
    }
  };
  for (const route of Object.values(config.routes)) {
    if ("tls" in route) await tlsFiles(route.tls);
    await tlsFiles((route.forward_auth || undefined)?.tls);
    const htpasswd = route.basic_auth?.users_file;
    if (htpasswd !== undefined && !files.has(htpasswd)) {
      files.set(htpasswd, lossy.decode(await readFileCapped(htpasswd)));
    }
    for (const keyFile of jwtFiles(route)) {
      if (!files.has(keyFile)) files.set(keyFile, lossy.decode(await readFileCapped(keyFile)));
    }
  }
  await tlsFiles(config.forward_auth?.tls);
  for (const list of ipAccessFiles(config)) {
    if (!files.has(list)) files.set(list, lossy.decode(await readFileCapped(list)));
  }
  return files;
}
