// A route's `client_cert` rule: which verified TLS client certificates may use it (the listener's
// `tls.client_auth` verified them; this only says whose). Compiled once at load.

import { compileRegex } from "./conditions.ts";

/** What the rule looks at of a client certificate (ports.ts ClientCert has these). */
export interface CertView {
  subject: string;
  san: string;
  /** SHA-256, lower-case hex without colons. */
  fingerprint: string;
}

/** The config shape (config/schema_route.ts ClientCertRule). */
export interface ClientCertSpec {
  subject_matches?: string;
  san_matches?: string;
  fingerprints?: string[];
}

/** Whether a request's certificate (undefined: none) may use the route. */
export type CertCheck = (cert: CertView | undefined) => boolean;

/** A fingerprint as written (hex, any case, colons or spaces between bytes), normalized. */
export function normalizeFingerprint(text: string): string {
  return text.replace(/[\s:]/g, "").toLowerCase();
}

/** Whether a written fingerprint is a SHA-256 one (64 hex digits once normalized). */
export function isSha256Fingerprint(text: string): boolean {
  return /^[0-9a-f]{64}$/.test(normalizeFingerprint(text));
}

/** Compiles a rule (validated: its regexes compile). Every key given must hold. */
export function compileClientCert(spec: ClientCertSpec): CertCheck {
  const subject = spec.subject_matches === undefined ? null : compileRegex(spec.subject_matches);
  const san = spec.san_matches === undefined ? null : compileRegex(spec.san_matches);
  const prints = spec.fingerprints ? new Set(spec.fingerprints.map(normalizeFingerprint)) : null;
  return (cert) => {
    if (cert === undefined) return false;
    if (subject !== null && !(subject instanceof RegExp && subject.test(cert.subject))) {
      return false;
    }
    if (san !== null && !(san instanceof RegExp && san.test(cert.san))) return false;
    return prints === null || prints.has(cert.fingerprint);
  };
}
