// The response side of the cache (cache.ts): stored entries described from a response's fields,
// miss bodies copied into an entry as they stream, and answers built from an entry (Age,
// Cache-Status, 304 for a satisfied client condition, HEAD).

import {
  freshnessLifetime,
  initialAge,
  mustRevalidate,
  parseCacheControl,
  staleIfErrorWindow,
  staleWhileRevalidateWindow,
} from "../domain/cache_control.ts";
import { parseHttpDate } from "../domain/conditional.ts";
import type { StoredResponse } from "../domain/response_cache.ts";
import { tagRequest } from "../domain/errors.ts";
import { BODY_BYTES, BODY_REPLACED } from "../ports.ts";
import type { BodyCounter, CountedResponse } from "../ports.ts";
import type { RequestContext } from "./context.ts";
import { REPRESENTATION } from "./filters/compress.ts";
import type { RepresentingResponse } from "./filters/compress.ts";
import { rangeOf } from "./cache_range.ts";

/** Cache-Status member name (RFC 9211 §2). */
export const NAME = "prox";

/** A StoredResponse (without its body yet) for a response's header list and timing. */
export function describe(
  headers: [string, string][],
  o: {
    status: number;
    statusText: string;
    requestTime: number;
    responseTime: number;
    defaultTtl?: number;
    /** The route's `stale_while_revalidate`, ms, for answers that do not say. */
    defaultSwr?: number;
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
    staleIfError: staleIfErrorWindow(cc),
    staleWhileRevalidate: staleWhileRevalidateWindow(cc, o.defaultSwr),
    mustRevalidate: mustRevalidate(cc),
    etag: get("etag"),
    lastModified: get("last-modified"),
  };
}

/** Most bytes of miss bodies a route holds read ahead of clients that have not read them. */
export const READ_AHEAD_MAX = 16 * 1024 * 1024;

/** A miss body on its way to the client and into the store. */
export interface Tee {
  body: ReadableStream<Uint8Array>;
  /** Bytes handed to the client and whether it got them all, for the access log. */
  counter: BodyCounter;
}

/**
 * Reads a miss body from the upstream as fast as it comes while it may still be stored (up to
 * `limit` bytes), keeping a copy of each chunk, and hands the copies to the client as it asks:
 * a slow client does not hold back the entry that collapsed requests wait for. `done` gets the
 * whole body, or null when it is not to be stored: past `limit` (the rest is then read as the
 * client reads it, as without a cache), an upstream failure, or a client that left while nobody
 * else `waits()` for the entry. `readAhead` counts the bytes read but not yet taken by clients
 * across a route's bodies: past READ_AHEAD_MAX, a body is read only as its client reads it (else
 * clients that read nothing could have Prox hold `limit` bytes each, one per connection).
 * `inFlight` counts the copies kept of a route's bodies still arriving, up to `inFlightMax`: past
 * it a body is not stored (else many slow misses at once would hold `limit` bytes each, whatever the
 * store's bound).
 */
export function teeBody(
  body: ReadableStream<Uint8Array>,
  o: {
    limit: number;
    done: (bytes: Uint8Array<ArrayBuffer> | null) => void;
    waits: () => boolean;
    readAhead?: { bytes: number };
    inFlight?: { bytes: number };
    inFlightMax?: number;
  },
): Tee {
  const readAhead = o.readAhead ?? { bytes: 0 };
  const reader = body.getReader();
  const counter: BodyCounter = { bytes: 0, ended: false };
  /** Copies not yet handed to the client. */
  let queue: Uint8Array[] = [];
  /** Their bytes, counted in readAhead too. */
  let queued = 0;
  /** Wakes a pump that waits for its client to take what it read ahead. */
  let taken: (() => void) | null = null;
  const take = (n: number) => {
    queued -= n;
    readAhead.bytes -= n;
    taken?.();
    taken = null;
  };
  /** Copies for the entry; null once it will not be stored. */
  let copies: Uint8Array[] | null = [];
  let size = 0;
  /** Their bytes, counted in inFlight too. */
  let kept = 0;
  const inFlight = o.inFlight ?? { bytes: 0 };
  const inFlightMax = o.inFlightMax ?? Infinity;
  let finished = false;
  let failed: { err: unknown } | null = null;
  let pumping = true;
  let gone = false;
  let wake: (() => void) | null = null;
  const signal = () => {
    wake?.();
    wake = null;
  };
  let settled = false;
  const settle = (bytes: Uint8Array<ArrayBuffer> | null) => {
    if (settled) return;
    settled = true;
    inFlight.bytes -= kept;
    kept = 0;
    copies = null;
    o.done(bytes);
  };
  const pump = async () => {
    while (copies !== null) {
      // Over the route's read-ahead bound: one chunk ahead of the client, as without a cache.
      while (queued > 0 && readAhead.bytes >= READ_AHEAD_MAX && copies !== null) {
        await new Promise<void>((r) => taken = r);
      }
      if (copies === null) break;
      let r: ReadableStreamReadResult<Uint8Array>;
      try {
        r = await reader.read();
      } catch (err) {
        failed = { err };
        settle(null);
        break;
      }
      if (r.done) {
        finished = true;
        settle(copies === null ? null : concat(copies, size));
        break;
      }
      // A copy: the upstream client may reuse the chunk's memory once it is handed on.
      const copy = r.value.slice();
      size += copy.byteLength;
      if (!gone) {
        queue.push(copy);
        queued += copy.byteLength;
        readAhead.bytes += copy.byteLength;
      }
      if (copies === null) break; // dropped while reading
      if (size > o.limit || inFlight.bytes + copy.byteLength > inFlightMax) settle(null);
      else {
        copies.push(copy);
        kept += copy.byteLength;
        inFlight.bytes += copy.byteLength;
      }
      signal();
    }
    pumping = false;
    signal();
    // Read on for requests waiting for the entry after the client left, and now not to be
    // stored: nobody reads the rest, so the upstream is let go (else its connection is held).
    if (gone && !finished && failed === null) await reader.cancel().catch(() => {});
  };
  // Never left rejected: an unhandled rejection would end the process. A body that arrived
  // whole still reaches the client if storing it failed.
  pump().catch((err) => {
    if (!finished) failed ??= { err };
    // Its copies counted out of inFlight, when it failed before it settled (concat).
    try {
      settle(null);
    } catch { /* the store's own failure: nothing more to undo */ }
    pumping = false;
    signal();
  });
  const out = new ReadableStream<Uint8Array>({
    async pull(ctl) {
      for (;;) {
        const next = queue.shift();
        if (next) {
          take(next.byteLength);
          counter.bytes += next.byteLength;
          ctl.enqueue(next);
          return;
        }
        if (failed) {
          ctl.error(tagRequest(failed.err, counter.request));
          return;
        }
        if (finished) {
          counter.ended = true;
          ctl.close();
          return;
        }
        if (!pumping) {
          // Not stored after all: the rest goes as the client reads it.
          let r: ReadableStreamReadResult<Uint8Array>;
          try {
            r = await reader.read();
          } catch (err) {
            ctl.error(tagRequest(err, counter.request));
            return;
          }
          if (r.done) {
            counter.ended = true;
            ctl.close();
          } else {
            counter.bytes += r.value.byteLength;
            ctl.enqueue(r.value);
          }
          return;
        }
        await new Promise<void>((r) => wake = r);
      }
    },
    cancel(reason) {
      gone = true;
      queue = [];
      take(queued);
      // Requests waiting for this entry keep it coming, and so does a response rule that replaced
      // the body (the entry is the upstream's answer; the rule applies to each hit); else the
      // upstream is let go. Either way no more than the entry's limit is read.
      if (pumping && (o.waits() || reason === BODY_REPLACED)) return;
      settle(null);
      return reader.cancel(reason).catch(() => {});
    },
  }, { highWaterMark: 0 });
  return { body: out, counter };
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

/**
 * A response from a stored entry, with its Age (RFC 9111 §5.1) and Cache-Status; with `range`
 * (a GET's Range and If-Range), a range of a stored 200 when the request asks one it allows.
 */
export function fromStore(
  ctx: RequestContext,
  entry: StoredResponse,
  o: { age: number; status: string; range?: { value: string; ifRange: string | null } },
): Response {
  const headers = new Headers();
  for (const [k, v] of entry.headers) headers.append(k, v);
  // Digits up to 2^31 (RFC 9111 §1.2.2), never String()'s "1e+23".
  headers.set("age", String(Math.min(Math.floor(o.age / 1000), 2 ** 31)));
  headers.append("cache-status", o.status);
  if (entry.status === 200 && clientCondition(ctx.req.headers, entry, ctx.startWall)) {
    const h = new Headers();
    for (const name of NOT_MODIFIED_FIELDS) {
      const v = headers.get(name);
      if (v !== null) h.set(name, v);
    }
    const res: RepresentingResponse = new Response(null, { status: 304, headers: h });
    // For `compress`: the Vary and ETag of the stored 200, as it would send it (a PNG or a body
    // under min_length is not compressed, and its 304 must not say otherwise).
    const length = headers.get("content-length");
    res[REPRESENTATION] = {
      contentType: headers.get("content-type"),
      contentEncoding: headers.get("content-encoding"),
      length: length !== null && /^\d+$/.test(length) ? Number(length) : entry.body.byteLength,
    };
    return res;
  }
  const ranged = o.range && entry.status === 200 && rangeOf(entry, headers, o.range, o.status);
  if (ranged) return ranged;
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
 * (RFC 9111 §4.3.2): a 304 then answers instead of the body. The client's own fields, not as a
 * request_headers rule rewrote them for the upstream (as nginx): only the client knows its copy.
 */
function clientCondition(headers: Headers, entry: StoredResponse, now: number): boolean {
  const inm = headers.get("if-none-match");
  if (inm !== null) {
    if (entry.etag === null) return false;
    const want = opaque(entry.etag);
    return inm.split(",").some((t) => t.trim() === "*" || opaque(t.trim()) === want);
  }
  const ims = headers.get("if-modified-since");
  if (ims === null || entry.lastModified === null) return false;
  const since = parseHttpDate(ims.trim(), now);
  const modified = parseHttpDate(entry.lastModified.trim(), now);
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
