// Response compression: which responses get a content coding, and which one (RFC 9110 §8.4,
// §12.5.3). Pure: the pipeline asks, an adapter compresses.

import { acceptedEncodings } from "./conditional.ts";
import { isGrpcType } from "./grpc.ts";

/** The content codings Prox can apply, in its default order of preference. */
export const COMPRESS_CODINGS = ["zstd", "br", "gzip"] as const;
export type ContentCoding = typeof COMPRESS_CODINGS[number];

/**
 * Media types compressed by default: text and the structured formats served as text. Images,
 * audio, video, fonts in woff/woff2 and archives are compressed already.
 */
export const DEFAULT_COMPRESS_TYPES: readonly string[] = [
  "text/*",
  "application/json",
  "application/*+json",
  "application/javascript",
  "application/x-javascript",
  "application/ecmascript",
  "application/xml",
  "application/*+xml",
  "application/x-ndjson",
  "application/graphql-response+json",
  "application/wasm",
  "application/x-yaml",
  "application/yaml",
  "application/toml",
  "application/vnd.ms-fontobject",
  "font/ttf",
  "font/otf",
  "image/svg+xml",
  "image/x-icon",
  "image/vnd.microsoft.icon",
  "image/bmp",
];

/** Smallest body (by its Content-Length) worth a coding; smaller ones go as they are. */
export const DEFAULT_MIN_LENGTH = 1024;

/** A route's compression settings, resolved. */
export interface CompressPolicy {
  codings: readonly ContentCoding[];
  minLength: number;
  /** True when the media type (no parameters, lower case) may be compressed. */
  types: (mediaType: string) => boolean;
}

/** The `compress` key as written: `true`, `false`, or the object form. */
export type CompressSpec = boolean | {
  algorithms?: readonly ContentCoding[];
  min_length?: number;
  types?: readonly string[];
};

/** What a type pattern may look like: `type/subtype`, `*` standing for any run of characters. */
export const TYPE_PATTERN = /^[a-z0-9!#$&^_.+*-]+\/[a-z0-9!#$&^_.+*-]+$/i;

/** Resolves a route's `compress` key; null when the route does not compress. */
export function compressPolicy(spec: CompressSpec | undefined): CompressPolicy | null {
  if (spec === undefined || spec === false) return null;
  const o = spec === true ? {} : spec;
  return {
    codings: o.algorithms ?? COMPRESS_CODINGS,
    minLength: o.min_length ?? DEFAULT_MIN_LENGTH,
    types: typeMatcher(o.types ?? DEFAULT_COMPRESS_TYPES),
  };
}

/** A matcher for media-type patterns such as `text/*` or `application/*+json`. */
export function typeMatcher(patterns: readonly string[]): (mediaType: string) => boolean {
  const exact = new Set<string>();
  const wild: RegExp[] = [];
  for (const p of patterns) {
    const lower = p.toLowerCase();
    if (!lower.includes("*")) exact.add(lower);
    else {
      const body = lower.split("*").map((s) => s.replace(/[.+^$]/g, "\\$&")).join("[^/]*");
      wild.push(new RegExp(`^${body}$`));
    }
  }
  return (t) => exact.has(t) || wild.some((re) => re.test(t));
}

/** The media type of a Content-Type value: no parameters, lower case. */
export function mediaTypeOf(contentType: string): string {
  const semi = contentType.indexOf(";");
  return (semi < 0 ? contentType : contentType.slice(0, semi)).trim().toLowerCase();
}

/** What the response needs to know about itself to decide. */
export interface CompressInput {
  method: string;
  acceptEncoding: string | null;
  status: number;
  contentType: string | null;
  contentEncoding: string | null;
  contentLength: string | null;
  cacheControl: string | null;
  /** False when the response has no body at all (besides HEAD, 204 and 304). */
  hasBody: boolean;
}

/**
 * `skip`: leave the response as it is (its form does not depend on Accept-Encoding);
 * `vary`: send it as it is but say it depends on Accept-Encoding (no acceptable coding this time);
 * `encode`: apply `coding`.
 */
export type CompressDecision =
  | { kind: "skip" }
  | { kind: "vary" }
  | { kind: "encode"; coding: ContentCoding };

const SKIP: CompressDecision = { kind: "skip" };
const VARY: CompressDecision = { kind: "vary" };

/** Decides whether and how a response is compressed under `policy`. */
export function decideCompression(i: CompressInput, policy: CompressPolicy): CompressDecision {
  // 1xx, 204, 205 and 304 carry no content (RFC 9110 §15.3.5, §15.3.6, §15.4.5); a 206 is a range
  // of the identity representation (a coding would have to apply to the whole of it); 101 hands
  // the connection over.
  if (
    i.status < 200 || i.status === 204 || i.status === 205 || i.status === 206 ||
    i.status === 304
  ) return SKIP;
  if (!i.hasBody && i.method !== "HEAD") return SKIP;
  if (i.contentType === null) return SKIP;
  const type = mediaTypeOf(i.contentType);
  // gRPC compresses its own messages (`grpc-encoding`); its clients do not undo a
  // `Content-Encoding`, so such an answer is never compressed whatever the route's types
  // (`application/*+json` matches `grpc+json`). gRPC-Web is HTTP that browsers decode.
  if (!policy.types(type) || isGrpcType(type)) return SKIP;
  return negotiate(i, policy);
}

/**
 * For a 304: the decision the 200 it stands for would get, since a 304 carries that 200's Vary
 * and ETag (RFC 9110 §15.4.5). `i` describes the 200 as far as it is known; a type not known (a
 * proxied 304 seldom names one) counts as compressible.
 */
export function decideNotModified(i: CompressInput, policy: CompressPolicy): CompressDecision {
  if (i.contentType !== null && !policy.types(mediaTypeOf(i.contentType))) return SKIP;
  return negotiate(i, policy);
}

/** The checks after the media type: coding already applied, no-transform, length, the client. */
function negotiate(i: CompressInput, policy: CompressPolicy): CompressDecision {
  if (i.contentEncoding !== null && i.contentEncoding.trim().toLowerCase() !== "identity") {
    return SKIP;
  }
  if (i.cacheControl !== null && /(?:^|,)\s*no-transform\s*(?:,|$)/i.test(i.cacheControl)) {
    return SKIP;
  }
  if (i.contentLength !== null) {
    const n = Number(i.contentLength);
    if (Number.isFinite(n) && n < policy.minLength) return SKIP;
  }
  const coding = acceptedEncodings(i.acceptEncoding, policy.codings)[0] as
    | ContentCoding
    | undefined;
  return coding ? { kind: "encode", coding } : VARY;
}

/** A Vary value with `Accept-Encoding` added (once; `*` already covers it). */
export function varyWithAcceptEncoding(vary: string | null): string {
  if (vary === null || vary.trim() === "") return "Accept-Encoding";
  const names = vary.split(",").map((s) => s.trim().toLowerCase());
  if (names.includes("*") || names.includes("accept-encoding")) return vary;
  return `${vary}, Accept-Encoding`;
}

/**
 * The ETag of the encoded representation: a strong tag becomes weak, as in nginx, since the
 * encoded bytes are not the ones the upstream's tag names (RFC 9110 §8.8.3); weak ones stay.
 */
export function etagForEncoded(etag: string): string {
  return etag.startsWith("W/") ? etag : `W/${etag}`;
}
