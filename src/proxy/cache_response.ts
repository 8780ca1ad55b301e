// The response side of the cache (cache.ts): stored entries described from a response's fields,
// miss bodies copied into an entry as they stream, and answers built from an entry (Age,
// Cache-Status, 304 for a satisfied client condition, HEAD).

import { freshnessLifetime, initialAge, parseCacheControl } from "../domain/cache_control.ts";
import { parseHttpDate } from "../domain/conditional.ts";
import type { StoredResponse } from "../domain/response_cache.ts";
import { BODY_BYTES } from "../ports.ts";
import type { CountedResponse } from "../ports.ts";
import type { RequestContext } from "./context.ts";

/** A StoredResponse (without its body yet) for a response's header list and timing. */
export function describe(
  headers: [string, string][],
  o: {
    status: number;
    statusText: string;
    requestTime: number;
    responseTime: number;
    defaultTtl?: number;
  },
): StoredResponse {
  const get = (name: string): string | null => {
    let v: string | null = null;
    for (const [k, val] of headers) if (k === name) v = v === null ? val : `${v}, ${val}`;
    return v;
  };
  const timing = {
    requestTime: o.requestTime,
    responseTime: o.responseTime,
    date: get("date"),
    age: get("age"),
    expires: get("expires"),
  };
  const cc = parseCacheControl(get("cache-control"));
  return {
    status: o.status,
    statusText: o.statusText,
    headers: headers.filter(([k]) => k !== "age"),
    body: new Uint8Array(0),
    requestTime: o.requestTime,
    responseTime: o.responseTime,
    initialAge: initialAge(timing),
    lifetime: freshnessLifetime(cc, timing, o.defaultTtl),
    noCache: cc.has("no-cache"),
    etag: get("etag"),
    lastModified: get("last-modified"),
  };
}

/**
 * The body as the client reads it, copied on the way into `done` when it ends whole. Past
 * `limit` bytes, or when the upstream fails or the client leaves, the copy is dropped.
 */
export function teeBody(
  body: ReadableStream<Uint8Array>,
  limit: number,
  done: (bytes: Uint8Array<ArrayBuffer>) => void,
): ReadableStream<Uint8Array> {
  const reader = body.getReader();
  let chunks: Uint8Array[] | null = [];
  let size = 0;
  return new ReadableStream<Uint8Array>({
    async pull(ctl) {
      let r: ReadableStreamReadResult<Uint8Array>;
      try {
        r = await reader.read();
      } catch (err) {
        chunks = null;
        ctl.error(err);
        return;
      }
      if (r.done) {
        ctl.close();
        if (chunks) done(concat(chunks, size));
        chunks = null;
        return;
      }
      if (chunks) {
        size += r.value.byteLength;
        // A copy: the upstream client may reuse the chunk's memory once it is handed on.
        if (size > limit) chunks = null;
        else chunks.push(r.value.slice());
      }
      ctl.enqueue(r.value);
    },
    cancel(reason) {
      chunks = null;
      return reader.cancel(reason);
    },
  }, { highWaterMark: 0 });
}

function concat(chunks: Uint8Array[], size: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.byteLength;
  }
  return out;
}

/** Statuses whose responses have no body (a Response with one would throw). */
const NULL_BODY = new Set([101, 103, 204, 205, 304]);

/** A response from a stored entry, with its Age (RFC 9111 §5.1) and Cache-Status. */
export function fromStore(
  ctx: RequestContext,
  entry: StoredResponse,
  o: { age: number; status: string },
): Response {
  const headers = new Headers();
  for (const [k, v] of entry.headers) headers.append(k, v);
  headers.set("age", String(Math.floor(o.age / 1000)));
  headers.append("cache-status", o.status);
  if (entry.status === 200 && clientCondition(ctx.req.headers, entry)) {
    const h = new Headers();
    for (const name of NOT_MODIFIED_FIELDS) {
      const v = headers.get(name);
      if (v !== null) h.set(name, v);
    }
    return new Response(null, { status: 304, headers: h });
  }
  const init = { status: entry.status, statusText: entry.statusText, headers };
  if (NULL_BODY.has(entry.status)) return new Response(null, init);
  if (ctx.req.method === "HEAD") {
    // The length its GET would get; an empty stream, not null, or Deno.serve would claim 0.
    if (!headers.has("content-length")) headers.set("content-length", String(entry.body.length));
    return new Response(new ReadableStream({ start: (c) => c.close() }), init);
  }
  return new Response(entry.body, init);
}

/** Fields a 304 repeats from the full response (RFC 9110 §15.4.5), plus the cache's own. */
const NOT_MODIFIED_FIELDS = [
  "cache-control",
  "content-location",
  "date",
  "etag",
  "expires",
  "vary",
  "last-modified",
  "age",
  "cache-status",
];

/**
 * True when the client's If-None-Match or If-Modified-Since is satisfied by the stored entry
 * (RFC 9111 §4.3.2): a 304 then answers instead of the body.
 */
function clientCondition(headers: Headers, entry: StoredResponse): boolean {
  const inm = headers.get("if-none-match");
  if (inm !== null) {
    if (entry.etag === null) return false;
    const want = opaque(entry.etag);
    return inm.split(",").some((t) => t.trim() === "*" || opaque(t.trim()) === want);
  }
  const ims = headers.get("if-modified-since");
  if (ims === null || entry.lastModified === null) return false;
  const since = parseHttpDate(ims.trim());
  const modified = parseHttpDate(entry.lastModified.trim());
  return since !== null && modified !== null && modified <= since;
}

/** An entity tag without its weakness marker, for weak comparison (RFC 9110 §8.8.3.2). */
function opaque(tag: string): string {
  return tag.startsWith("W/") ? tag.slice(2) : tag;
}

/** `res` with our Cache-Status member appended (RFC 9211: the last member is nearest the client). */
export function withStatus(res: Response, status: string): Response {
  try {
    res.headers.append("cache-status", status);
    return res;
  } catch {
    const h = new Headers(res.headers);
    h.append("cache-status", status);
    const out: CountedResponse = new Response(res.body, {
      status: res.status,
      statusText: res.statusText,
      headers: h,
    });
    const counter = (res as CountedResponse)[BODY_BYTES];
    if (counter) out[BODY_BYTES] = counter;
    return out;
  }
}
