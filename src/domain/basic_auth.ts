// HTTP Basic authentication (RFC 7617): reading the credentials a client sends and writing the
// challenge. Pure; checking the password is the PasswordCheck port's job.

/** What a request's `Authorization` field holds for Basic authentication. */
export type BasicCredentials =
  | { kind: "none" }
  | { kind: "malformed" }
  | { kind: "basic"; user: string; password: string };

const fatal = new TextDecoder("utf-8", { fatal: true });

/**
 * Reads `Authorization: Basic base64(user:password)` (RFC 7617 §2): the scheme is
 * case-insensitive, the user id ends at the first colon, both are UTF-8 (the user id compared in
 * Unicode NFC, §2.1). Another scheme counts as none; bad base64 or UTF-8 as malformed.
 */
export function parseBasicAuthorization(field: string | null): BasicCredentials {
  if (field === null) return { kind: "none" };
  const m = /^\s*basic\s+([A-Za-z0-9+/]+={0,2})\s*$/i.exec(field);
  if (!m) return /^\s*basic(\s|$)/i.test(field) ? { kind: "malformed" } : { kind: "none" };
  let text: string;
  try {
    const bin = atob(m[1]);
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    text = fatal.decode(bytes);
  } catch {
    return { kind: "malformed" };
  }
  const colon = text.indexOf(":");
  if (colon < 0) return { kind: "malformed" };
  return {
    kind: "basic",
    user: text.slice(0, colon).normalize("NFC"),
    password: text.slice(colon + 1),
  };
}

/**
 * The `WWW-Authenticate` value for `realm` (RFC 7617 §2, §2.1): a quoted string, with `\` and `"`
 * escaped, and `charset="UTF-8"` so browsers send non-ASCII user names and passwords as UTF-8.
 */
export function basicChallenge(realm: string): string {
  return `Basic realm="${realm.replace(/[\\"]/g, (c) => `\\${c}`)}", charset="UTF-8"`;
}
