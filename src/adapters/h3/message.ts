// HTTP/3 message rules (RFC 9114 §4.1–§4.3): request pseudo-headers, forbidden connection
// headers, field syntax, split cookies, content-length; and the field list for a response.
// Pure: fields in, a validated head (or a MessageError carrying the status to answer) out.

import type { Field } from "./qpack.ts";
import { trailerPasses } from "../../domain/headers.ts";

/** A malformed request (RFC 9114 §4.1.2): answer `status` (400, 431, 501) then end the stream. */
export class MessageError extends Error {
  readonly status: number;
  constructor(status: number, reason: string) {
    super(reason);
    this.name = "MessageError";
    this.status = status;
  }
}

/** A validated request head. */
export interface RequestHead {
  method: string;
  scheme: string;
  authority: string;
  /** Path and query, starting with "/" (or "*" for OPTIONS). */
  path: string;
  headers: Field[];
  /** Declared content-length, or null. */
  contentLength: number | null;
}

/** Connection-specific fields that HTTP/3 forbids (RFC 9114 §4.2). */
const CONNECTION_HEADERS = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "transfer-encoding",
  "upgrade",
]);

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9a-z]+$/;
const METHOD = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
// Any control character but HTAB makes a field value malformed (RFC 9114 §10.3, RFC 9110 §5.5).
// deno-lint-ignore no-control-regex
const BAD_VALUE = /[\x00-\x08\x0a-\x1f\x7f]/;

/** The HTTP/3 field section size of a list: names + values + 32 per field (RFC 9114 §4.2.2). */
export function fieldSectionSize(fields: readonly Field[]): number {
  let n = 0;
  for (const [k, v] of fields) n += k.length + v.length + 32;
  return n;
}

function checkRegular(name: string, value: string): void {
  if (!TOKEN.test(name)) throw new MessageError(400, `Invalid field name "${name}"`);
  if (BAD_VALUE.test(value)) throw new MessageError(400, `Invalid value for field "${name}"`);
  if (CONNECTION_HEADERS.has(name)) {
    throw new MessageError(400, `Connection-specific field "${name}" is not allowed in HTTP/3`);
  }
  if (name === "te" && value.toLowerCase() !== "trailers") {
    throw new MessageError(400, `Field "te" may only be "trailers" in HTTP/3`);
  }
}

/** Validates request fields and splits out the pseudo-headers (RFC 9114 §4.3.1). */
export function parseRequestHead(
  fields: readonly Field[],
  opts: { maxFieldSectionSize: number },
): RequestHead {
  if (fieldSectionSize(fields) > opts.maxFieldSectionSize) {
    throw new MessageError(431, "Request header fields too large");
  }
  const pseudo = new Map<string, string>();
  const headers: Field[] = [];
  const cookies: string[] = [];
  let contentLength: number | null = null;
  for (const [name, value] of fields) {
    if (name.startsWith(":")) {
      if (headers.length > 0 || cookies.length > 0) {
        throw new MessageError(400, `Pseudo-header "${name}" after regular fields`);
      }
      if (![":method", ":scheme", ":authority", ":path", ":protocol"].includes(name)) {
        throw new MessageError(400, `Unknown pseudo-header "${name}" in a request`);
      }
      if (pseudo.has(name)) throw new MessageError(400, `Duplicate pseudo-header "${name}"`);
      if (BAD_VALUE.test(value)) throw new MessageError(400, `Invalid value for "${name}"`);
      pseudo.set(name, value);
      continue;
    }
    checkRegular(name, value);
    if (name === "cookie") {
      cookies.push(value); // split crumbs are joined again (RFC 9114 §4.2.1)
      continue;
    }
    if (name === "content-length") {
      if (!/^[0-9]{1,15}$/.test(value)) throw new MessageError(400, "Invalid content-length");
      const n = Number(value);
      if (contentLength !== null && contentLength !== n) {
        throw new MessageError(400, "Conflicting content-length values");
      }
      if (contentLength !== null) continue;
      contentLength = n;
    }
    headers.push([name, value]);
  }
  if (cookies.length > 0) headers.push(["cookie", cookies.join("; ")]);

  const method = pseudo.get(":method");
  if (method === undefined) throw new MessageError(400, "Missing :method");
  if (!METHOD.test(method)) throw new MessageError(400, `Invalid method "${method}"`);
  if (pseudo.has(":protocol") || method === "CONNECT") {
    throw new MessageError(501, "CONNECT is not supported over HTTP/3");
  }
  const scheme = pseudo.get(":scheme");
  const path = pseudo.get(":path");
  if (scheme === undefined || path === undefined || path === "") {
    throw new MessageError(400, "Missing :scheme or :path");
  }
  if (scheme !== "https" && scheme !== "http") {
    throw new MessageError(400, `Unsupported :scheme "${scheme}"`);
  }
  // Whitespace is no part of a request target (RFC 3986 §2): the URL parser would drop a tab
  // and encode a space, serving another path than the client sent.
  if (!(path.startsWith("/") || (path === "*" && method === "OPTIONS")) || /\s/.test(path)) {
    throw new MessageError(400, `Invalid :path "${path}"`);
  }
  const host = headers.find(([k]) => k === "host")?.[1];
  const authority = pseudo.get(":authority") ?? host;
  if (!authority) throw new MessageError(400, "Missing :authority and host");
  if (host !== undefined && pseudo.has(":authority") && host !== authority) {
    throw new MessageError(400, ":authority and host differ");
  }
  if (/[\s/?#@]/.test(authority)) throw new MessageError(400, `Invalid :authority "${authority}"`);
  return { method, scheme, authority, path, headers, contentLength };
}

/** Validates a trailer section: regular fields only (RFC 9114 §4.1.2). */
export function parseTrailers(fields: readonly Field[]): Field[] {
  for (const [name, value] of fields) {
    if (name.startsWith(":")) throw new MessageError(400, `Pseudo-header "${name}" in trailers`);
    checkRegular(name, value);
  }
  return fields.slice();
}

/**
 * The field list for a response: `:status` first, then the headers minus connection-specific
 * ones and those named by `connection` (RFC 9114 §4.2). Set-Cookie stays one field per cookie.
 */
export function responseFields(status: number, headers: Headers): Field[] {
  const out: Field[] = [[":status", String(status)]];
  const named = new Set(
    (headers.get("connection") ?? "").toLowerCase().split(",").map((s) => s.trim()),
  );
  // forEach: a for-of over Headers costs about ten times as much (a Web IDL iterator step per field).
  headers.forEach((value, name) => {
    if (CONNECTION_HEADERS.has(name) || named.has(name)) return;
    if (name === "te" && value.toLowerCase() !== "trailers") return;
    out.push([name, value]);
  });
  return out;
}

/**
 * The field list of an interim response, a 103 Early Hints (RFC 8297): `:status` first, names
 * in lower case (RFC 9114 §4.2), no connection-specific field.
 */
export function interimFields(
  status: number,
  fields: readonly (readonly [string, string])[],
): Field[] {
  const out: Field[] = [[":status", String(status)]];
  for (const [name, value] of fields) {
    const k = name.toLowerCase();
    if (!CONNECTION_HEADERS.has(k)) out.push([k, value]);
  }
  return out;
}

/**
 * The field list of a response's trailer section (RFC 9114 §4.1): an upstream's trailers without
 * pseudo-fields, connection-specific fields (§4.2) or those a trailer must not hold.
 */
export function trailerFields(trailers: readonly (readonly [string, string])[]): Field[] {
  const out: Field[] = [];
  for (const [name, value] of trailers) {
    const k = name.toLowerCase();
    if (trailerPasses(k)) out.push([k, value]);
  }
  return out;
}

/** True when a response to `method` with `status` carries no content (RFC 9110 §6.4.1). */
export function responseHasNoBody(method: string, status: number): boolean {
  return method === "HEAD" || status === 204 || status === 304 || (status >= 100 && status < 200);
}

/**
 * The urgency (0 most urgent … 7) from a `priority` field value or PRIORITY_UPDATE payload
 * (RFC 9218 §4, a Structured Fields dictionary); null when absent or invalid (ignored, §4).
 */
export function parseUrgency(value: string): number | null {
  for (const member of value.split(",")) {
    const [key, v] = member.trim().split("=", 2);
    if (key === "u" && v !== undefined && /^[0-7]$/.test(v.trim())) return Number(v.trim());
  }
  return null;
}
