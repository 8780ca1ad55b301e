// OCSP checks of client certificates (`tls.client_auth.ocsp`, RFC 6960): asks the certificate's
// responder (its authorityInfoAccess, or the configured `responder`) whether it is revoked, checks
// that the answer is signed by the certificate's issuer or by a responder the issuer delegated to
// (id-kp-OCSPSigning), and keeps answers until their nextUpdate (at most an hour) in a bounded
// cache, so that a client's handshakes cost one request per hour, not one each. The encoding is
// domain/ocsp.ts's; hashes and signatures are node:crypto's.

import { createHash, X509Certificate } from "node:crypto";
import {
  type CertId,
  ocspCertFields,
  ocspRequest,
  parseOcspResponse,
  RESPONSE_STATUS,
} from "../domain/ocsp.ts";
import { signatureVerifies } from "./crl_verify.ts";
import { timerDelay } from "../config/duration.ts";

/** `tls.client_auth.ocsp`. */
export interface OcspConfig {
  /** `leaf`: the client's certificate; `chain`: its intermediates too. */
  check: "leaf" | "chain";
  /** Asked instead of each certificate's own responder. */
  responder?: string;
  /** ms per request. */
  timeout: number;
  /** A certificate whose status cannot be learned (no responder, no answer, a bad one). */
  on_error: "refuse" | "allow";
  /** Answers kept (one per certificate). */
  cache_size: number;
}

/**
 * A certificate's verdict: `refused` null when it may go on, else why not; `kind` says which
 * refusal (for the metric), `error` a status not learned (refused or let in by on_error).
 */
export type OcspVerdict = {
  refused: string | null;
  error?: string;
  kind?: "revoked" | "unknown" | "error";
};

/** The verdict of a check its checker's `close` cut short (or that came after it). */
const CLOSED: OcspVerdict = {
  refused: "the listener closed before the OCSP status was learned",
  kind: "error",
};

/** How long an answer without nextUpdate, or a failure, is kept. */
const NO_NEXT_UPDATE_MS = 5 * 60_000;
/**
 * How long after its thisUpdate an answer without nextUpdate is taken (plus SKEW_MS), as
 * OpenSSL's OCSP_check_validity does with a maxsec (`openssl ocsp -status_age 3600`); nginx
 * passes none. Responders that sign each answer when asked date it now.
 */
const NO_NEXT_UPDATE_MAX_AGE_MS = 3_600_000;
const FAILURE_MS = 5_000;
/** The longest an answer is kept, whatever its nextUpdate says (nginx keeps one an hour). */
const MAX_KEEP_MS = 3_600_000;
/** Clock skew allowed between Prox and the responder. */
const SKEW_MS = 5 * 60_000;
/** An answer larger than this is refused (one for one certificate is 1–4 KB). */
const MAX_ANSWER = 64 * 1024;

const sha1 = (b: Uint8Array) => new Uint8Array(createHash("sha1").update(b).digest());

/** Checks certificates over OCSP; `close` aborts requests in flight. */
export interface OcspChecker {
  /** The verdict for `cert` (DER), which `issuer` (DER) signed. */
  check(cert: Uint8Array, issuer: Uint8Array): Promise<OcspVerdict>;
  /** Which certificates of a chain are asked about. */
  readonly mode: OcspConfig["check"];
  /** What it was made from (a listener whose config differs is another listener). */
  readonly config: OcspConfig;
  /** Answers held (for /status and tests). */
  readonly cached: number;
  close(): void;
}

export function createOcspChecker(
  config: OcspConfig,
  opts: {
    fetch?: typeof fetch;
    /** The wall clock (ms), which answers' dates are compared with. */
    now?: () => number;
    /** A monotonic clock (ms), which answers are kept by: a wall clock set back keeps them longer. */
    elapsed?: () => number;
  } = {},
): OcspChecker {
  const doFetch = opts.fetch ?? fetch;
  const now = opts.now ?? Date.now;
  const elapsed = opts.elapsed ?? (() => performance.now());
  const cache = new Map<string, { verdict: OcspVerdict; until: number }>();
  const inflight = new Map<string, Promise<OcspVerdict>>();
  const closing = new AbortController();

  const remember = (key: string, verdict: OcspVerdict, until: number) => {
    cache.delete(key);
    if (config.cache_size <= 0) return;
    while (cache.size >= config.cache_size) cache.delete(cache.keys().next().value!);
    cache.set(key, { verdict, until });
  };

  const failed = (error: string): OcspVerdict =>
    config.on_error === "allow"
      ? { refused: null, error }
      : { refused: error, error, kind: "error" };

  async function ask(cert: Uint8Array, issuer: Uint8Array): Promise<[OcspVerdict, number]> {
    const c = ocspCertFields(cert);
    const i = ocspCertFields(issuer);
    const id: CertId = {
      issuerNameHash: sha1(c.issuerName),
      issuerKeyHash: sha1(i.publicKey),
      serial: c.serial,
    };
    const url = config.responder ?? c.ocspUrls[0];
    if (!url) {
      return [failed("the certificate names no OCSP responder (and ocsp.responder is not set)"), 0];
    }
    let body: Uint8Array;
    try {
      const res = await doFetch(url, {
        method: "POST",
        headers: {
          "content-type": "application/ocsp-request",
          "accept": "application/ocsp-response",
        },
        body: ocspRequest(id),
        signal: AbortSignal.any([closing.signal, AbortSignal.timeout(timerDelay(config.timeout))]),
        redirect: "error",
      });
      if (!res.ok) {
        await res.body?.cancel();
        return [failed(`the OCSP responder ${url} answered ${res.status}`), FAILURE_MS];
      }
      body = await readCapped(res);
    } catch (err) {
      // Closed (a reload replaced the listener, or shutdown): the connection goes unserved either
      // way, so no on_error applies and nothing is kept.
      if (closing.signal.aborted) return [CLOSED, 0];
      const why = err instanceof Error && err.name === "TimeoutError"
        ? `no answer within ${config.timeout} ms`
        : err instanceof Error
        ? err.message
        : String(err);
      return [failed(`the OCSP responder ${url} could not be asked: ${why}`), FAILURE_MS];
    }
    try {
      const answer = parseOcspResponse(body);
      if (answer.status !== 0) {
        const name = RESPONSE_STATUS[answer.status] ?? `status ${answer.status}`;
        return [failed(`the OCSP responder ${url} answered ${name}`), FAILURE_MS];
      }
      const signer = signerOf(answer, issuer, i.subjectName, now());
      if (!signer) {
        return [
          failed(`the answer of ${url} is not signed by the certificate's issuer or its delegate`),
          FAILURE_MS,
        ];
      }
      const single = answer.responses.find((r) => r.matches(id));
      if (!single) {
        return [failed(`the answer of ${url} is about another certificate`), FAILURE_MS];
      }
      const t = now();
      if (single.thisUpdate > t + SKEW_MS) {
        return [failed(`the answer of ${url} is dated in the future`), FAILURE_MS];
      }
      if (single.nextUpdate !== null && single.nextUpdate < t - SKEW_MS) {
        return [failed(`the answer of ${url} is out of date`), FAILURE_MS];
      }
      // Without nextUpdate the status is fresh at thisUpdate (RFC 6960 §2.4); without a bound
      // a "good" answer, once recorded, could be replayed over plain HTTP for good.
      const staleAt = single.thisUpdate + NO_NEXT_UPDATE_MAX_AGE_MS;
      if (single.nextUpdate === null && staleAt < t - SKEW_MS) {
        return [
          failed(
            `the answer of ${url} is out of date: it names no nextUpdate, and its thisUpdate (${
              new Date(single.thisUpdate).toISOString()
            }) is over an hour old`,
          ),
          FAILURE_MS,
        ];
      }
      const keep = Math.min(
        single.nextUpdate === null
          ? Math.min(NO_NEXT_UPDATE_MS, Math.max(staleAt + SKEW_MS - t, 0))
          : Math.max(single.nextUpdate - t, 0),
        MAX_KEEP_MS,
      );
      if (single.status === "good") return [{ refused: null }, keep];
      if (single.status === "revoked") {
        const at = single.revokedAt === null
          ? ""
          : ` on ${new Date(single.revokedAt).toISOString()}`;
        return [{ refused: `certificate revoked${at} (OCSP, ${url})`, kind: "revoked" }, keep];
      }
      return [{
        refused: `the OCSP responder ${url} does not know the certificate`,
        kind: "unknown",
      }, keep];
    } catch (err) {
      return [
        failed(`the answer of ${url} could not be read: ${(err as Error).message}`),
        FAILURE_MS,
      ];
    }
  }

  return {
    mode: config.check,
    config,
    get cached() {
      return cache.size;
    },
    check(cert, issuer) {
      if (closing.signal.aborted) return Promise.resolve(CLOSED);
      let key: string;
      try {
        const c = ocspCertFields(cert);
        key = hex(sha1(ocspCertFields(issuer).publicKey)) + ":" + hex(c.serial);
      } catch (err) {
        return Promise.resolve({
          refused: `a certificate Prox cannot read: ${(err as Error).message}`,
          kind: "error",
        });
      }
      const hit = cache.get(key);
      if (hit && hit.until > elapsed()) return Promise.resolve(hit.verdict);
      const pending = inflight.get(key);
      if (pending) return pending;
      const p = ask(cert, issuer).then(([verdict, keepMs]) => {
        if (keepMs > 0 && !closing.signal.aborted) remember(key, verdict, elapsed() + keepMs);
        return verdict;
      }, (err) => failed(`OCSP check failed: ${(err as Error).message}`)).finally(() =>
        inflight.delete(key)
      );
      inflight.set(key, p);
      return p;
    },
    close() {
      closing.abort(new Error("closed"));
      cache.clear();
    },
  };
}

const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");

/** The body, refusing one past MAX_ANSWER. */
async function readCapped(res: Response): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  let n = 0;
  for await (const chunk of res.body ?? []) {
    n += chunk.length;
    if (n > MAX_ANSWER) throw new Error(`an answer over ${MAX_ANSWER} bytes`);
    parts.push(chunk);
  }
  const out = new Uint8Array(n);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/**
 * Who signed the answer, if it is one it may trust (RFC 6960 §4.2.2.2): the issuer itself, or a
 * certificate sent along that the issuer issued for signing OCSP answers and that is valid now.
 */
function signerOf(
  answer: ReturnType<typeof parseOcspResponse>,
  issuerDer: Uint8Array,
  issuerSubject: Uint8Array,
  now: number,
): X509Certificate | null {
  const issuer = new X509Certificate(issuerDer);
  if (signatureVerifies(answer, answer.tbs, issuer.publicKey, answer.signature)) return issuer;
  for (const der of answer.certs) {
    try {
      const fields = ocspCertFields(der);
      if (!fields.ocspSigning) continue;
      if (!sameBytes(fields.issuerName, issuerSubject)) continue;
      const delegate = new X509Certificate(der);
      if (!delegate.verify(issuer.publicKey)) continue;
      if (Date.parse(delegate.validFrom) > now || Date.parse(delegate.validTo) < now) continue;
      if (signatureVerifies(answer, answer.tbs, delegate.publicKey, answer.signature)) {
        return delegate;
      }
    } catch { /* not a certificate it can use */ }
  }
  return null;
}

const sameBytes = (a: Uint8Array, b: Uint8Array) =>
  a.length === b.length && a.every((x, i) => x === b[i]);
