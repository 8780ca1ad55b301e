// The value a stored variant is keyed by for one request field its Vary names: the field as the
// request sent it, normalised where the field's own syntax says two spellings mean the same
// (RFC 9111 §4.1), so `gzip, br`, `br,gzip` and two lines `gzip` + `br` share one variant rather
// than fill the store with copies. Fields whose syntax is not known here compare as sent (trimmed,
// repeated lines joined by ", "): folding a value an app may read apart would serve one client
// the answer meant for another.

/**
 * Comma-separated request fields whose members are a case-insensitive token (a coding, a media
 * range, a language tag, a charset) with `;` parameters, and whether the order of the members is
 * meaningless. Accept-Encoding's is (the weights decide, RFC 9110 §12.5.3); Accept's and
 * Accept-Language's are kept, as apps break ties between equal weights by order (§12.5.4).
 */
const LISTS: ReadonlyMap<string, { unordered: boolean }> = new Map([
  ["accept", { unordered: false }],
  ["accept-charset", { unordered: false }],
  ["accept-encoding", { unordered: true }],
  ["accept-language", { unordered: false }],
  ["te", { unordered: false }],
]);

/** A value with nothing to normalise: one lower-case token. */
const PLAIN = /^[a-z0-9!#$%&'*+.^_`|~/-]*$/;

/** A qvalue (RFC 9110 §12.4.2): 0 to 1 with at most three decimals. */
const QVALUE = /^(?:0(?:\.\d{0,3})?|1(?:\.0{0,3})?)$/;

/**
 * `value` (the request's `name` field as `Headers.get` gives it, or null when absent) normalised
 * for the variant key. For the list fields above: optional whitespace around `,` and `;` and
 * empty members dropped, the member's token and parameter names lower-cased, a qvalue written
 * shortest with a last `q=1` dropped, and Accept-Encoding's members sorted (unless a coding is
 * named twice, when its order decides). A value with a quoted string compares as sent.
 */
export function varyValue(name: string, value: string | null): string | null {
  if (value === null || PLAIN.test(value)) return value;
  const list = LISTS.get(name);
  if (list === undefined || value.includes('"')) return value;
  const members: string[] = [];
  const tokens = new Set<string>();
  let repeated = false;
  for (const raw of value.split(",")) {
    const parts = raw.split(";");
    const token = parts[0].trim().toLowerCase();
    let params = "";
    for (let i = 1; i < parts.length; i++) {
      const p = parts[i].trim();
      const eq = p.indexOf("=");
      const pname = (eq < 0 ? p : p.slice(0, eq)).toLowerCase();
      let pvalue = eq < 0 ? "" : p.slice(eq);
      if (pname === "q" && QVALUE.test(pvalue.slice(1))) {
        const q = Number(pvalue.slice(1));
        if (q === 1 && i === parts.length - 1) continue;
        pvalue = `=${q}`;
      }
      params += `;${pname}${pvalue}`;
    }
    if (token === "" && params === "") continue; // an empty member (RFC 9110 §5.6.1)
    if (tokens.has(token)) repeated = true;
    tokens.add(token);
    members.push(token + params);
  }
  if (list.unordered && !repeated) members.sort();
  return members.join(",");
}
