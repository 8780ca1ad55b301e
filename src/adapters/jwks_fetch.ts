// The JwksFetcher port on Deno's fetch: a JWK Set is a small public JSON document, fetched rarely
// (proxy/jwks.ts), so the platform client is enough. Redirects are followed (IdPs move them) one
// by one, never from https to http; the body is read up to a cap and the whole exchange is
// bounded by a timeout.

import type { JwksAnswer, JwksFetcher } from "../ports.ts";

/** Redirect statuses followed (RFC 9110 §15.4), as fetch would. */
const REDIRECTS = new Set([301, 302, 303, 307, 308]);
/** Most redirects followed for one fetch (fetch's own limit is 20). */
const MAX_REDIRECTS = 10;

/** Fetches JWK Sets with `fetch`; `client` (a Deno.HttpClient) may add trusted CAs. */
export function createJwksFetcher(client?: Deno.HttpClient): JwksFetcher {
  return {
    async fetch(url, opts): Promise<JwksAnswer> {
      const signal = AbortSignal.timeout(opts.timeoutMs);
      const secure = /^https:/i.test(url);
      let res: Response;
      let at = url;
      for (let hops = 0;; hops++) {
        try {
          res = await fetch(at, {
            signal,
            headers: { accept: "application/jwk-set+json, application/json" },
            // Followed here, hop by hop: fetch would follow https -> http -> https and report
            // only the last URL, though the plain hop could send it anywhere.
            redirect: "manual",
            ...(client ? { client } : {}),
          });
        } catch (err) {
          throw new Error(fetchFailure(err, { signal, timeoutMs: opts.timeoutMs }));
        }
        const location = REDIRECTS.has(res.status) ? res.headers.get("location") : null;
        if (location === null) break;
        await res.body?.cancel().catch(() => {});
        if (hops === MAX_REDIRECTS) {
          throw new Error(`JWK Set redirected over ${MAX_REDIRECTS} times`);
        }
        at = new URL(location, at).href;
        // Keys that sign tokens must not come over, nor be pointed to from, an unprotected
        // connection (what validate warns about for an http jwks_url).
        if (secure && !at.startsWith("https:")) {
          throw new Error(`JWK Set redirected from https to http (${at}): refused`);
        }
      }
      const reader = res.body?.getReader();
      const chunks: Uint8Array[] = [];
      let size = 0;
      try {
        while (reader) {
          const { done, value } = await reader.read();
          if (done) break;
          size += value.length;
          if (size > opts.maxBytes) throw new Error(`JWK Set larger than ${opts.maxBytes} bytes`);
          chunks.push(value);
        }
      } finally {
        await reader?.cancel().catch(() => {});
      }
      const bytes = new Uint8Array(size);
      let offset = 0;
      for (const c of chunks) {
        bytes.set(c, offset);
        offset += c.length;
      }
      return {
        status: res.status,
        body: new TextDecoder().decode(bytes),
        cacheControl: res.headers.get("cache-control"),
      };
    },
  };
}

/**
 * Why fetch failed, said plainly: its TypeError says only "fetch failed"; the reason (a
 * certificate, DNS, a refused connection) is in its cause.
 */
function fetchFailure(err: unknown, o: { signal: AbortSignal; timeoutMs: number }): string {
  if (o.signal.aborted) return `No answer within ${o.timeoutMs} ms`;
  const cause = err instanceof Error ? err.cause : undefined;
  const text = cause instanceof Error ? cause.message : err instanceof Error ? err.message : "";
  // "error sending request for url (…): client error (Connect): dns error: …" → from "client".
  return text.replace(/^error sending request for url \([^)]*\): /, "") || String(err);
}
