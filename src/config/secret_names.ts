// Secrets in a config: the key (and header) names that hold them, the redacted copy the admin API
// serves (/config, /status), and a YAML syntax error's excerpt with them masked. Header names
// included: `X-Auth`, `X-Access-Key`, Azure's `Ocp-Apim-Subscription-Key`…

/** A key or header name whose value is a secret (token, password, authorization…). */
export const SECRET_KEY =
  /token|password|passwd|secret|auth|cookie|credential|signature|(?:api|access|private|subscription|hmac)[-_]?key/i;

/**
 * A URL query parameter whose value is a credential: a secret's name, or the names APIs use for
 * one (Google's `key`, a signed URL's `sig`, an OAuth `code`), as OpenTelemetry scrubs them.
 */
const SECRET_PARAM = /^(?:key|sig|code|jwt)$/i;

/** A bcrypt hash (basic_auth's users): an offline guessing attack needs only it. */
export const BCRYPT_HASH = /^\$2[abxy]?\$\d\d\$/;

// `key: value` in block or flow style (`"key":value` too, as JSON writes it); the value up to a
// flow separator or a comment.
const PAIR =
  /(["']?)([^\s"':{},[\]#]+)\1(\s*:\s*)("[^"]*"?|'[^']*'?|\[[^\]#]*\]?|[^,{}[\]#\s][^,{}[\]#]*)/g;
// A URL's password (`redis://:pw@host`), up to the last "@" before the path.
const URL_PASSWORD = /([a-z][a-z0-9+.-]*:\/\/[^/@:\s"']*:)([^/\s"']*)(@)/gi;
// A bcrypt hash anywhere on the line.
const BCRYPT_ANY = /\$2[abxy]?\$\d\d\$[./A-Za-z0-9]*/g;

/**
 * One line of config source with the values of secret keys, URL passwords and bcrypt hashes
 * masked character for character (`*`), so columns (a caret under the line) stay where they were.
 */
export function maskSecretsInLine(line: string): string {
  const mask = (s: string) => "*".repeat(s.length);
  return line
    // Quotes, brackets and commas stay (the line's shape); what they hold is masked.
    .replace(
      PAIR,
      (all, q, key, sep, value: string) =>
        SECRET_KEY.test(key) ? `${q}${key}${q}${sep}${value.replace(/[^"'[\],]/g, "*")}` : all,
    )
    .replace(URL_PASSWORD, (_all, head, pw, at) => `${head}${mask(pw)}${at}`)
    .replace(BCRYPT_ANY, mask);
}

/** What a redacted value shows. */
export const REDACTED = "[redacted]";

/**
 * Copies a config with secret values replaced: keys that name secrets (token, password,
 * authorization…), bcrypt hashes and passwords inside URLs (`redis://:pw@host`).
 */
export function redactSecrets(value: unknown, key = ""): unknown {
  // A boolean is a switch, never a secret: `forward_auth: false` and `copy_response_cookies:
  // true` were shown as "[redacted]".
  if (
    key && SECRET_KEY.test(key) && value !== null && typeof value !== "object" &&
    typeof value !== "boolean"
  ) {
    return REDACTED;
  }
  // A webhook URL (Slack, Discord, Teams) carries its credential in the path: only the origin shows.
  if (key === "webhook" && typeof value === "string") {
    const m = /^([a-z][a-z0-9+.-]*:\/\/)(?:[^/?#]*@)?([^/?#@]*)/i.exec(value);
    return m ? `${m[1]}${m[2]}/${REDACTED}` : REDACTED;
  }
  // basic_auth's bcrypt hashes sit under user names: an offline guessing attack needs them.
  if (typeof value === "string" && BCRYPT_HASH.test(value)) return REDACTED;
  if (Array.isArray(value)) return value.map((v) => redactSecrets(v));
  if (value !== null && typeof value === "object") {
    const out: Record<string, unknown> = {};
    // A webhook's headers (notify, tls.acme.dns) are there to carry its credential, under any name
    // (`X-Honeycomb-Team`, `DD-APPLICATION-KEY`): every value is hidden, the names stay.
    const hook = "webhook" in value;
    for (const [k, v] of Object.entries(value)) {
      out[k] = hook && k === "headers" && v !== null && typeof v === "object"
        ? Object.fromEntries(Object.keys(v).map((h) => [h, REDACTED]))
        : redactSecrets(v, k);
    }
    return out;
  }
  if (typeof value !== "string" || !/^[a-z][a-z0-9+.-]*:\/\//i.test(value)) return value;
  let url = value;
  // Up to the last "@" of the authority: URL parsers take a password with a raw "@" whole.
  if (/^[a-z][a-z0-9+.-]*:\/\/[^/@]*:[^/]*@/i.test(url)) {
    url = url.replace(/^([a-z][a-z0-9+.-]*:\/\/[^/@:]*):[^/]*@/i, `$1:${REDACTED}@`);
  }
  // A secret in the query: ioredis takes `redis://h:6379/0?password=pw` as the password.
  return url.replace(
    /([?&])([^=&#]*)=([^&#]*)/g,
    (all, sep, name) => {
      const n = safeDecode(name);
      return SECRET_KEY.test(n) || SECRET_PARAM.test(n) ? `${sep}${name}=${REDACTED}` : all;
    },
  );
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}
