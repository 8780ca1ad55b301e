// When to renew an ACME certificate and how long to wait after a failed attempt. Pure: time
// and randomness are parameters.

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

/** What is known about a certificate that decides renewal. */
export interface CertificateFacts {
  /** notAfter, ms since the epoch (read from the certificate itself). */
  notAfter: number;
  /** notBefore, ms since the epoch (unknown: the lifetime does not shorten the lead time). */
  notBefore?: number;
  /** DNS names in its subjectAltName. */
  names: readonly string[];
  /** Its public key as `tls.acme.key_type` names it (p256, rsa2048…), when known. */
  keyType?: string;
}

/**
 * The moment renewal should start: `renewBeforeDays` before notAfter, moved earlier by up to
 * a jitter window (a tenth of the renewal period, at most a day) so that many instances or
 * many certificates issued together do not all renew in the same second. A lead time longer
 * than half the certificate's lifetime becomes a third of it: short-lived certificates (a
 * private CA's 24 h, Let's Encrypt's 6-day profile) would otherwise be due the moment they
 * are issued, and be ordered again and again.
 */
export function renewalAt(
  facts: CertificateFacts,
  opts: { renewBeforeDays: number; jitter: number },
): number {
  const lifetime = facts.notBefore === undefined ? Infinity : facts.notAfter - facts.notBefore;
  const configured = opts.renewBeforeDays * DAY;
  const before = configured > lifetime / 2 ? Math.floor(lifetime / 3) : configured;
  const window = Math.min(before / 10, DAY);
  return facts.notAfter - before - Math.floor(clamp01(opts.jitter) * window);
}

/**
 * Why a stored certificate cannot simply be kept, or null when it can: it must cover every
 * configured domain (one SAN certificate) and must not be due for renewal.
 */
export function renewalReason(
  facts: CertificateFacts | null,
  opts: { domains: readonly string[]; now: number; renewAt: number; keyType?: string },
): "missing" | "domains" | "key_type" | "expired" | "due" | null {
  if (!facts) return "missing";
  const names = new Set(facts.names.map((n) => n.toLowerCase()));
  if (!opts.domains.every((d) => names.has(d.toLowerCase()))) return "domains";
  if (opts.keyType && facts.keyType && facts.keyType !== opts.keyType) return "key_type";
  if (opts.now >= facts.notAfter) return "expired";
  if (opts.now >= opts.renewAt) return "due";
  return null;
}

/**
 * Exponential back-off after the `attempt`-th consecutive failure (1-based): base, 2×base, 4×…,
 * capped, each scaled into [50 %, 100 %] by `random` so retries of many instances spread out.
 */
export function retryDelay(
  attempt: number,
  opts: { random: number; baseMs?: number; maxMs?: number },
): number {
  const base = opts.baseMs ?? 60_000;
  const max = opts.maxMs ?? DAY;
  const raw = Math.min(max, base * 2 ** Math.max(0, Math.min(attempt - 1, 30)));
  return Math.max(1, Math.floor(raw * (0.5 + clamp01(opts.random) / 2)));
}

/** The DNS names of a certificate's subjectAltName string (`DNS:a, DNS:b, IP Address:…`). */
export function sanNames(subjectAltName: string | undefined): string[] {
  if (!subjectAltName) return [];
  return subjectAltName.split(/,\s*/).filter((s) => s.startsWith("DNS:")).map((s) => s.slice(4));
}

function clamp01(x: number): number {
  return Number.isFinite(x) ? Math.min(Math.max(x, 0), 0.999999) : 0;
}
