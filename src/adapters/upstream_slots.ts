// The pool limits for HTTP/2 upstreams. fetch multiplexes an h2 origin over its own connections
// and queues what the origin's stream limit holds back without any bound, so the HTTP/1.1 pool's
// admission is applied per request instead: at most `maxConnectionsPerUpstream` requests in
// flight per origin, then `queueLimit` waiting first come, first served for up to `queueTimeout`,
// the rest shed with ProxyError("overloaded") (503), exactly as the HTTP/1.1 pool does.

import { tagRequest } from "../domain/errors.ts";
import type { ProxyError } from "../domain/errors.ts";
import { leftQueue, shedError } from "./upstream_pool.ts";
import type { UpstreamPoolOptions } from "./upstream_pool.ts";
import { timerDelay } from "../config/duration.ts";
import { BODY_BYTES } from "../ports.ts";
import type { BodyCounter, CountedResponse } from "../ports.ts";

/** Frees a slot taken by `acquire`; calling it again does nothing. */
export type Release = () => void;

/** Per-origin request slots. */
export interface RequestSlots {
  /**
   * A slot for `key`: at once when one is free, else after waiting; rejects when shed. `signal`
   * (or the function that looks it up, called only when the request must wait) ends the wait.
   */
  acquire(key: string, signal?: AbortSignal | (() => AbortSignal)): Release | Promise<Release>;
  /** Requests in flight and waiting for `key` (tests and status). */
  stats(key: string): { active: number; queued: number };
}

interface Waiter {
  grant(): void;
  fail(err: ProxyError): void;
}

interface Origin {
  active: number;
  waiters: Waiter[];
}

/** Creates the slots with the pool's limits. */
export function createRequestSlots(opts: UpstreamPoolOptions): RequestSlots {
  const origins = new Map<string, Origin>();

  const releaser = (key: string, o: Origin): Release => {
    let done = false;
    return () => {
      if (done) return;
      done = true;
      const next = o.waiters.shift();
      if (next) return next.grant(); // the slot passes straight on
      o.active--;
      if (o.active === 0) origins.delete(key);
    };
  };

  return {
    acquire(key, lookUp) {
      let o = origins.get(key);
      if (!o) origins.set(key, o = { active: 0, waiters: [] });
      const origin = o;
      if (origin.active < opts.maxConnectionsPerUpstream) {
        origin.active++;
        return releaser(key, origin);
      }
      if (origin.waiters.length >= opts.queueLimit) {
        const msg = `Upstream "${key}" has ${origin.active} requests in flight and ` +
          `${origin.waiters.length} waiting`;
        return Promise.reject(shedError(key, msg, "queue_full"));
      }
      const signal = typeof lookUp === "function" ? lookUp() : lookUp;
      if (signal?.aborted) return Promise.reject(leftQueue(signal, key));
      return new Promise<Release>((resolve, reject) => {
        let timer: ReturnType<typeof setTimeout> | undefined;
        const leave = (err: ProxyError) => {
          const i = origin.waiters.indexOf(w);
          if (i >= 0) origin.waiters.splice(i, 1);
          w.fail(err);
        };
        const onAbort = () => leave(leftQueue(signal, key));
        const w: Waiter = {
          grant() {
            clearTimeout(timer);
            signal?.removeEventListener("abort", onAbort);
            resolve(releaser(key, origin));
          },
          fail(err) {
            clearTimeout(timer);
            signal?.removeEventListener("abort", onAbort);
            reject(err);
          },
        };
        origin.waiters.push(w);
        signal?.addEventListener("abort", onAbort, { once: true });
        if (opts.queueTimeout > 0) {
          timer = setTimeout(() => {
            const msg = `No request slot for upstream "${key}" within ${opts.queueTimeout} ms`;
            leave(shedError(key, msg, "queue_timeout"));
          }, timerDelay(opts.queueTimeout));
        }
      });
    },
    stats(key) {
      const o = origins.get(key);
      return { active: o?.active ?? 0, queued: o?.waiters.length ?? 0 };
    },
  };
}

/**
 * The response with `release` called once its body ends, fails or is cancelled (or now). Its
 * body bytes are counted under BODY_BYTES for the access log, as the HTTP/1.1 client does.
 */
export function releasedWithBody(res: Response, release: Release): Response {
  if (!res.body) {
    release();
    return res;
  }
  const reader = res.body.getReader();
  const counter: BodyCounter = { bytes: 0, ended: false };
  let cancelled = false;
  const body = new ReadableStream<Uint8Array>({
    async pull(c) {
      try {
        const r = await reader.read();
        if (r.done) {
          // A cancel also ends a pending read with done: only a real end counts as delivered.
          if (!cancelled) counter.ended = true;
          release();
          c.close();
        } else {
          counter.bytes += r.value.byteLength;
          c.enqueue(r.value);
        }
      } catch (err) {
        release();
        c.error(tagRequest(err, counter.request));
      }
    },
    cancel(reason) {
      cancelled = true;
      release();
      return reader.cancel(reason);
    },
  }, { highWaterMark: 0 });
  const out: CountedResponse = new Response(body, {
    status: res.status,
    statusText: res.statusText,
    headers: res.headers,
  });
  out[BODY_BYTES] = counter;
  return out;
}
