// HTTP/2 to upstreams through fetch (Deno has no other h2 client). fetch keeps the original Host
// only with `allowHost`, follows redirects unless told not to, and decodes gzip/br/deflate
// whenever the request's Accept-Encoding lets it: such requests go over HTTP/1.1 instead
// (`fetchSafe`), so bytes always pass through untouched.

import { ProxyError } from "../domain/errors.ts";
import type { HeaderMap } from "../domain/header_list.ts";
import { HOP_BY_HOP, stripHopByHop } from "../domain/headers.ts";
import type { UpstreamClient, UpstreamRequest, UpstreamTls } from "../ports.ts";
import { timerDelay } from "../config/duration.ts";
import { readClientChunk } from "../proxy/body_replay.ts";

/** Fields fetch adds (Deno's defaults) when a request has none of its own. */
const FETCH_DEFAULTS = ["user-agent", "accept", "accept-language"];

/**
 * True when fetch sends these headers as they are and will not decode the response:
 * - the client accepts only `identity` (a request without Accept-Encoding accepts anything,
 *   RFC 9110 §12.5.3, so asking for identity is a safe narrowing; it is set here);
 * - every field fetch would otherwise add is there (User-Agent `Deno/…`, `Accept: *\/*`,
 *   `Accept-Language: *`);
 * - Host is the origin's: HTTP/2 must not send a Host that differs from :authority (RFC 9113
 *   §8.3.1), which fetch takes from the URL (`preserve_host` then goes over HTTP/1.1).
 */
export function fetchSafe(headers: HeaderMap, originHost: string): boolean {
  if (headers.get("host") !== originHost) return false;
  for (const name of FETCH_DEFAULTS) if (headers.get(name) === null) return false;
  const ae = headers.get("accept-encoding");
  if (ae === null) {
    headers.set("accept-encoding", "identity");
    return true;
  }
  for (const part of ae.split(",")) {
    const coding = part.split(";")[0].trim().toLowerCase();
    if (coding !== "identity" && coding !== "") return false;
  }
  return true;
}

/** The response without hop-by-hop fields (HTTP/2 forbids most; a copy only when one came). */
function withoutHopFields(res: Response): Response {
  let found = false;
  res.headers.forEach((_, k) => {
    if (HOP_BY_HOP.includes(k)) found = true;
  });
  if (!found) return res;
  const h = new Headers(res.headers);
  stripHopByHop(h);
  return new Response(res.body, { status: res.status, statusText: res.statusText, headers: h });
}

/**
 * The response with its body watched: a pause longer than `idleMs` between chunks (0: none) aborts
 * the exchange with a timeout, as the HTTP/1.1 client's idle timeout does (fetch has none), and a
 * body that fails (the upstream reset the stream or went away) fails with an `upstream_reset`
 * ProxyError, not fetch's bare TypeError (logged as an unhandled error).
 */
function idleWatched(
  res: Response,
  o: { idleMs: number; ctl: AbortController; origin: string },
): Response {
  const { idleMs, ctl, origin } = o;
  const reader = res.body!.getReader();
  let timer: ReturnType<typeof setTimeout> | undefined;
  // Between pulls the client has yet to take the last chunk: a timeout then is the client's.
  let reading = false;
  const arm = () => {
    clearTimeout(timer);
    if (idleMs <= 0) return;
    timer = setTimeout(() => {
      reader.cancel().catch(() => {});
      ctl.abort(
        reading ? new ProxyError("timeout", `Upstream was idle for ${idleMs} ms`) : new ProxyError(
          "client_gone",
          `The client read none of the response for ${idleMs} ms (timeouts.idle)`,
        ),
      );
    }, timerDelay(idleMs));
  };
  const body = new ReadableStream<Uint8Array>({
    start: arm,
    async pull(c) {
      reading = true;
      try {
        const r = await reader.read();
        reading = false;
        if (ctl.signal.aborted) throw ctl.signal.reason;
        if (r.done) {
          clearTimeout(timer);
          c.close();
        } else {
          arm();
          c.enqueue(r.value);
        }
      } catch (err) {
        clearTimeout(timer);
        const why = ctl.signal.aborted ? ctl.signal.reason : err;
        c.error(
          why instanceof ProxyError ? why : new ProxyError(
            "upstream_reset",
            `Upstream "${origin}" ended the response body early: ${(err as Error)?.message ?? err}`,
            { source: origin, cause: err },
          ),
        );
      }
    },
    cancel(reason) {
      clearTimeout(timer);
      return reader.cancel(reason);
    },
  }, { highWaterMark: 0 });
  return new Response(body, {
    status: res.status,
    statusText: res.statusText,
    headers: res.headers,
  });
}

/**
 * The request body with its failure kept: fetch reports a body stream that fails (an upload over
 * `max_request_body`, a client that left) as a bare "fetch failed", which read as the upstream's
 * reset: 502, and a passive-health failure of a healthy target, where the same upload to an
 * HTTP/1.1 upstream got 413 or 499. A pause of more than `idleMs` between the client's chunks
 * (0: none) fails it with 408, as the HTTP/1.1 client's idle timeout does: fetch has none, and
 * a stalled upload held the exchange until the response-header timeout (504).
 */
function keepingFailure(
  body: ReadableStream<Uint8Array>,
  o: {
    failed: { error?: ProxyError; answered?: boolean };
    idleMs: number;
    abort: (err: ProxyError) => void;
  },
): ReadableStream<Uint8Array> {
  const reader = body.getReader();
  const fail = (err: ProxyError) => {
    o.failed.error ??= err;
    return err;
  };
  return new ReadableStream<Uint8Array>({
    async pull(c) {
      const timer = o.idleMs > 0
        ? setTimeout(() => {
          // Once the upstream has answered, the answer is not cut for the upload behind it.
          if (o.failed.answered) return;
          const msg = `The request body paused for more than ${o.idleMs} ms (timeouts.idle)`;
          reader.cancel().catch(() => {});
          o.abort(fail(new ProxyError("request_timeout", msg)));
        }, timerDelay(o.idleMs))
        : undefined;
      try {
        const r = await readClientChunk(reader);
        if (r.done) c.close();
        else c.enqueue(r.value);
      } catch (err) {
        c.error(fail(err as ProxyError));
      } finally {
        clearTimeout(timer);
      }
    },
    cancel: (reason) => reader.cancel(reason),
  }, { highWaterMark: 0 });
}

/**
 * Why fetch failed: its TypeError says only "fetch failed" and the reason is in its cause, which
 * starts "error sending request for url (…)": that URL (the client's query) is left out.
 */
function fetchReason(err: unknown): string {
  const cause = err instanceof Error && err.cause instanceof Error ? err.cause.message : "";
  const text = cause || (err instanceof Error ? err.message : String(err));
  return text.replace(/^error sending request for url \(.*?\): /, "");
}

/** A fetch-based client forced to HTTP/2 (used for origins that chose h2 by ALPN). */
export function createH2Client(): UpstreamClient {
  const clients = new Map<string, Deno.HttpClient>();
  // A snapshot's TLS settings are one object for all its requests: their key is made once.
  const keys = new WeakMap<UpstreamTls, string>();
  const clientFor = (req: UpstreamRequest): Deno.HttpClient => {
    const tls = req.tls;
    let key = "";
    if (tls) {
      key = keys.get(tls) ?? "";
      if (!key) {
        const c = tls.client;
        key = `${tls.caCerts?.join("\n") ?? ""}|${c ? `${c.cert}|${c.key}` : ""}`;
        keys.set(tls, key);
      }
    }
    let c = clients.get(key);
    if (!c) {
      if (clients.size >= 64) {
        for (const old of clients.values()) old.close();
        clients.clear();
      }
      c = Deno.createHttpClient({
        allowHost: true,
        caCerts: tls?.caCerts,
        http1: false,
        http2: true,
        ...tls?.client,
      });
      clients.set(key, c);
    }
    return c;
  };
  return {
    async send(req: UpstreamRequest): Promise<Response> {
      const origin = req.origin.origin;
      const ctl = new AbortController();
      const onAbort = () =>
        ctl.abort(new ProxyError("client_gone", "Client went away", { source: origin }));
      if (req.signal?.aborted) onAbort();
      req.signal?.addEventListener("abort", onAbort, { once: true });
      const t = req.timeouts;
      // fetch does not tell when it has connected: the head's wait includes the connect's. With
      // `connect: 0s` (no connect limit) it is response_header alone: it was no limit at all, and
      // an upstream that never answered held the request for good.
      const limit = t.responseHeader > 0 ? t.responseHeader + Math.max(t.connect, 0) : 0;
      const timer = limit > 0
        ? setTimeout(() =>
          ctl.abort(
            new ProxyError(
              "timeout",
              `Upstream "${origin}" sent no response header within ${limit} ms`,
              {
                source: origin,
              },
            ),
          ), timerDelay(limit))
        : undefined;
      const failed: { error?: ProxyError; answered?: boolean } = {};
      try {
        // fetch parses the URL again: a query it re-encodes (e.g. `'`) cannot go byte for byte.
        const res = await fetch(origin + req.target, {
          method: req.method,
          headers: req.headers,
          body: req.body instanceof ReadableStream
            ? keepingFailure(req.body, { failed, idleMs: t.idle, abort: (e) => ctl.abort(e) })
            : req.body,
          redirect: "manual",
          client: clientFor(req),
          signal: ctl.signal,
        });
        failed.answered = true;
        return withoutHopFields(
          res.body ? idleWatched(res, { idleMs: t.idle, ctl, origin }) : res,
        );
      } catch (err) {
        if (ctl.signal.aborted && ctl.signal.reason instanceof ProxyError) throw ctl.signal.reason;
        if (failed.error) throw failed.error;
        const msg = fetchReason(err);
        // hyper's connect phase says "(Connect)" (refused, DNS, the TLS handshake): no connection
        // opened. Not "connection error detected" or a reset, later, once the request may have
        // gone out.
        const refused = /\(Connect\)|refused|dns error|resolve|unreachable|certificate/i.test(msg);
        throw new ProxyError(
          refused ? "connect" : "upstream_reset",
          `Cannot reach upstream "${origin}": ${msg}`,
          { source: origin, sentNothing: refused, cause: err },
        );
      } finally {
        clearTimeout(timer);
        req.signal?.removeEventListener("abort", onAbort);
      }
    },
    close(): Promise<void> {
      for (const c of clients.values()) c.close();
      clients.clear();
      return Promise.resolve();
    },
  };
}
