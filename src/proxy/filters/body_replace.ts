// A `response_body` rule's `replace`: strings replaced as the answer streams (domain/body_replace.ts
// does the matching). The body is never buffered whole; the fields that described the upstream's
// bytes go, as nginx's sub_filter drops them.

import { StreamReplacer } from "../../domain/body_replace.ts";
import { etagForEncoded, mediaTypeOf } from "../../domain/compress.ts";
import { tagRequest } from "../../domain/errors.ts";
import { escapeFor, escapeValue } from "../../domain/escape.ts";
import { expand } from "../../domain/placeholders.ts";
import type { PlaceholderValues } from "../../domain/placeholders.ts";
import type { BodyRule } from "../../domain/rules.ts";
import type { BodyCounter } from "../../ports.ts";
import type { RouteRules } from "./rules.ts";

type ReplaceBody = Extract<BodyRule["body"], { kind: "replace" }>;

/**
 * Whether the upstream is asked for `Accept-Encoding: identity`: on a route with a `replace`
 * rule (whose strings Prox cannot see in a coded body; nginx users set `proxy_set_header
 * Accept-Encoding ""` for sub_filter), unless a request_headers rule sets the field itself.
 * The route's `compress` codes the answer for the client again.
 */
export function asksIdentity(rules: RouteRules): boolean {
  if (rules.responseBody?.body.kind !== "replace") return false;
  const own = rules.requestHeaders;
  return !own || ![...own.set, ...own.append].some(([name]) => name === "accept-encoding");
}

/**
 * Whether a `replace` rule applies to this answer: its media type is one of the rule's, its body
 * is not content-coded (Prox asks the upstream for identity on such routes; one that codes anyway
 * is passed on as it is), and it is not a 206, whose part cannot be searched without the rest.
 */
export function replaceApplies(res: Response, rule: ReplaceBody): boolean {
  if (res.status === 206) return false;
  const coding = res.headers.get("content-encoding");
  if (coding !== null && coding.trim().toLowerCase() !== "identity" && coding.trim() !== "") {
    return false;
  }
  const type = res.headers.get("content-type");
  return type !== null && rule.types(mediaTypeOf(type));
}

/** Fields describing the upstream's bytes, which the replaced stream no longer has. */
const STALE = [
  "content-length",
  "content-encoding",
  "content-md5",
  "digest",
  "content-digest",
  "repr-digest",
  "accept-ranges",
  "last-modified",
  "transfer-encoding",
];

/**
 * Edits `headers` for a replaced body: no length (chunked, or DATA frames), no digests or
 * ranges, no Last-Modified (as nginx's sub_filter), a strong ETag made weak (the bytes differ,
 * the meaning does not: If-None-Match compares weakly, so revalidation still gets 304).
 */
export function replacedHeaders(headers: Headers, status: number): void {
  for (const h of STALE) headers.delete(h);
  // A 416's `Content-Range: bytes */N` describes the representation, not this error body.
  if (status !== 416) headers.delete("content-range");
  const etag = headers.get("etag");
  if (etag !== null) headers.set("etag", etagForEncoded(etag));
}

/** A replacer for one answer: placeholders expanded and escaped for the body's media type. */
export function replacerFor(
  rule: ReplaceBody,
  o: { values: PlaceholderValues; contentType: string },
): StreamReplacer {
  const mode = escapeFor(o.contentType);
  const values: PlaceholderValues = mode === "none"
    ? o.values
    : (name) => escapeValue(o.values(name), mode);
  const utf8 = new TextEncoder();
  const pairs = rule.pairs.map((p) => ({
    find: p.find,
    replace: p.bytes ?? utf8.encode(expand(p.replace, values)),
  }));
  return new StreamReplacer(pairs, { once: rule.once });
}

/**
 * The body through `replacer`, pulled chunk by chunk (no pipe, as compress.ts). Counts the bytes
 * handed on for the access log.
 */
export function replacedBody(
  body: ReadableStream<Uint8Array>,
  replacer: StreamReplacer,
  counter: BodyCounter,
): ReadableStream<Uint8Array> {
  const reader = body.getReader();
  return new ReadableStream<Uint8Array>({
    async pull(ctl) {
      try {
        // Until something comes out: a chunk may be all held back.
        for (;;) {
          const r = await reader.read();
          if (r.done) {
            const rest = replacer.flush();
            if (rest.byteLength > 0) {
              counter.bytes += rest.byteLength;
              ctl.enqueue(rest);
            }
            counter.ended = true;
            ctl.close();
            return;
          }
          const out = replacer.push(r.value);
          if (out.byteLength > 0) {
            counter.bytes += out.byteLength;
            ctl.enqueue(out);
            return;
          }
        }
      } catch (err) {
        reader.cancel(err).catch(() => {});
        throw tagRequest(err, counter.request);
      }
    },
    cancel(reason) {
      return reader.cancel(reason);
    },
  }, { highWaterMark: 0 });
}
