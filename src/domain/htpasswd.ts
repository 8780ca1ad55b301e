// Password hashes for `basic_auth`: which ones Prox accepts (bcrypt only, as `htpasswd -B` and
// `caddy hash-password` write them), what is wrong with any other, and the htpasswd file format.
// Pure: checking a password against a hash is the PasswordCheck port's job (adapters/).

/** A bcrypt hash in modular crypt form: `$2a$`, `$2b$` or `$2y$`, a cost, 53 characters. */
const BCRYPT = /^\$2[aby]\$(0[4-9]|[12]\d|3[01])\$[./A-Za-z0-9]{53}$/;

/** The fix for a password that is not a bcrypt hash. */
export const HASH_HINT = "Hash it with `prox hash-password` (or `htpasswd -nbB USER PASSWORD`, " +
  "`caddy hash-password`) and write the hash it prints ($2b$… or $2y$…)";

/** The bcrypt cost of `hash` (log2 of its rounds), or null when it is not a bcrypt hash. */
export function bcryptCost(hash: string): number | null {
  return BCRYPT.test(hash) ? Number(hash.slice(4, 6)) : null;
}

/**
 * The highest bcrypt cost accepted: Caddy's default (about 2 s of Prox's CPU per check). Each step
 * doubles the time, and bcrypt runs on the event loop: at cost 31 one check takes days, and the few
 * checks basic_auth runs at once (an unknown user is checked against a real user's hash) would
 * leave every user not yet cached with 429 until a restart.
 */
export const MAX_BCRYPT_COST = 14;

/** The CPU time a bcrypt check of `cost` takes Prox, about (≈120 ms at cost 10), as text. */
export function bcryptTime(cost: number): string {
  const s = 0.12 * 2 ** (cost - 10);
  if (s < 60) return `${Math.round(s * 10) / 10} s`;
  if (s < 3600) return `${Math.round(s / 60)} min`;
  return s < 2 * 86400 ? `${Math.round(s / 3600)} h` : `${Math.round(s / 86400)} days`;
}

/**
 * Why a stored password cannot be used, or null for a bcrypt hash of cost MAX_BCRYPT_COST or less. Apache's other schemes (MD5
 * `$apr1$`, `{SHA}`, crypt) are weak or unsalted, and plain text is never stored.
 */
export function hashProblem(hash: string): string | null {
  if (BCRYPT.test(hash)) {
    const cost = bcryptCost(hash)!;
    return cost <= MAX_BCRYPT_COST ? null : `a bcrypt hash of cost ${cost}, whose every check ` +
      `would take about ${bcryptTime(cost)} of Prox's CPU (${MAX_BCRYPT_COST} at most)`;
  }
  if (hash.startsWith("$apr1$")) return "an Apache MD5 ($apr1$) hash, which is weak";
  if (hash.startsWith("{SHA}")) return "an unsalted SHA-1 ({SHA}) hash, which is weak";
  if (/^\$[156]\$/.test(hash)) return `a ${hash.slice(0, 3)} crypt hash, not bcrypt`;
  if (/^\$2[aby]?\$/.test(hash)) return "a malformed bcrypt hash (cost 04-31, then 53 characters)";
  if (/^\$2x\$/.test(hash)) return "a $2x$ hash (written by a buggy bcrypt)";
  if (/^[./A-Za-z0-9]{13}$/.test(hash)) return "a DES crypt hash, which is weak";
  return "plain text, not a bcrypt hash";
}

/** One htpasswd line Prox cannot use: 1-based line number and why. */
export interface HtpasswdProblem {
  line: number;
  message: string;
}

/**
 * Parses an htpasswd file: `user:hash` per line; blank lines and `#` comments skipped. Users
 * whose line has a problem are left out and reported; a user listed twice keeps the first line
 * (where Apache's lookup stops) and the repeat is reported.
 */
export function parseHtpasswd(
  text: string,
): { users: Map<string, string>; problems: HtpasswdProblem[] } {
  const users = new Map<string, string>();
  const problems: HtpasswdProblem[] = [];
  const lines = text.split(/\r?\n/);
  lines.forEach((raw, i) => {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) return;
    const colon = line.indexOf(":");
    if (colon <= 0) {
      problems.push({ line: i + 1, message: "not USER:HASH" });
      return;
    }
    const user = line.slice(0, colon).normalize("NFC");
    const hash = line.slice(colon + 1);
    const why = hashProblem(hash);
    if (why) {
      problems.push({ line: i + 1, message: `user "${user}" has ${why}` });
      return;
    }
    if (users.has(user)) {
      problems.push({
        line: i + 1,
        message: `user "${user}" is listed again (this line is ignored)`,
      });
      return;
    }
    users.set(user, hash);
  });
  return { users, problems };
}
