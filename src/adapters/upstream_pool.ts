// Bounded keep-alive pools, one per upstream origin: at most `maxConnectionsPerUpstream` open,
// `maxIdlePerUpstream` parked (newest reused first, oldest closed after `idleTimeout`), and a
// first-come-first-served wait queue of `queueLimit` requests beyond which requests are shed
// with ProxyError("overloaded") instead of piling up (issue 12's overload target).

import { ProxyError } from "../domain/errors.ts";
import type { ShedReason } from "../domain/errors.ts";
import type { H1Connection } from "./upstream_h1_conn.ts";

/** Pool limits (config `upstream_pool`); durations in milliseconds. */
export interface UpstreamPoolOptions {
  maxConnectionsPerUpstream: number;
  maxIdlePerUpstream: number;
  idleTimeout: number;
  /** Requests allowed to wait for a connection; more are shed (503). 0 sheds at once. */
  queueLimit: number;
  /** Longest wait for a connection before the request is shed. */
  queueTimeout: number;
}

/** Defaults, equal to the config schema's `upstream_pool` defaults. */
export const DEFAULT_POOL_OPTIONS: UpstreamPoolOptions = {
  maxConnectionsPerUpstream: 256,
  maxIdlePerUpstream: 256,
  idleTimeout: 60_000,
  queueLimit: 1024,
  queueTimeout: 5_000,
};

/** Counters of one origin's pool (for tests, status and metrics). */
export interface OriginStats {
  /** The pool key (upstream_client.ts's keyOf). */
  origin: string;
  /** Connections open or connecting, idle ones included. */
  open: number;
  idle: number;
  /** Requests waiting for a connection. */
  queued: number;
  /** Connections opened since start (a PROXY-protocol pool opens one per request). */
  opened: number;
  /** Requests sent on a connection that an earlier one used. */
  reused: number;
}

/** Since-start counts of one pool key; kept while its pool comes and goes. */
interface Totals {
  opened: number;
  reused: number;
}

/** Most pool keys whose totals are kept once their pool is gone (reloads change targets). */
const MAX_TOTALS = 1024;

interface Waiter {
  /** `conn` is a handed-over connection; null grants a slot to open a new one. */
  grant(conn: H1Connection | null): void;
  fail(err: ProxyError): void;
  done: boolean;
  /** Wants a new connection (a retry after a reused one was found closed). */
  fresh: boolean;
  /** Monotonic ms when it started waiting. */
  since: number;
}

interface Origin {
  key: string;
  /** Called by a parked connection that died (one closure per origin, not one per park). */
  onDead: (conn: H1Connection) => void;
  /** Open or connecting connections, counted against the limit. */
  open: number;
  /** Parked connections; the end is the most recently used. */
  idle: H1Connection[];
  waiters: Waiter[];
  /** Live (not done) waiters. */
  queued: number;
  totals: Totals;
}

/** The pools of one client. */
export interface ConnectionPool {
  /**
   * A connection to `key`: a parked one (returned as is, no promise: the common case costs no
   * extra microtask), a new one from `connect`, or one after waiting.
   */
  acquire(
    key: string,
    connect: () => Promise<H1Connection>,
    o?: {
      fresh?: boolean;
      /** The client's signal, looked up only when the request has to wait. */
      signal?: () => AbortSignal | undefined;
      /** Called when a request that had to wait is let go on (UpstreamRequest.onConnection). */
      granted?: () => void;
    },
  ): H1Connection | Promise<H1Connection>;
  /**
   * Takes one of `key`'s connection places for a connection opened elsewhere (a WebSocket's),
   * queueing and shedding as `acquire` does; resolves with the function that gives it back.
   */
  hold(
    key: string,
    o?: { signal?: () => AbortSignal | undefined },
  ): (() => void) | Promise<() => void>;
  /** Gives a connection back; it is parked or handed on only when `reusable`. */
  release(key: string, conn: H1Connection, reusable: boolean): void;
  /**
   * Each pool's figures, computed now: the live pools, or with `all` also the keys whose pools
   * closed (all zero but their totals).
   */
  stats(all?: boolean): OriginStats[];
  /** Closes every connection and fails every waiter. */
  close(): void;
}

/** idleSince of a connection parked since the last sweep, which stamps it (no clock read). */
const UNSTAMPED = -1;

/**
 * The idleSince to park `conn` with. Only an upstream's own Keep-Alive timeout needs the exact
 * time (acquire must not hand out a connection it may be closing); Prox's idleTimeout is checked
 * by the sweep, which stamps the connection on its next pass: closed at the first sweep after
 * idleTimeout from that stamp (at most two sweep intervals late), never before. A clock read
 * fewer per request.
 */
function stampFor(conn: H1Connection): number {
  return conn.idleLimit === Infinity ? UNSTAMPED : performance.now();
}

/** Creates the per-origin pools with the given limits. */
export function createConnectionPool(opts: UpstreamPoolOptions): ConnectionPool {
  const origins = new Map<string, Origin>();
  const totals = new Map<string, Totals>();
  const all = new Set<H1Connection>();
  let sweeper: ReturnType<typeof setInterval> | undefined;
  let closed = false;
  // One ticker sheds waiters past queueTimeout instead of a timer per waiter (a timer and its
  // clearing cost each waiting request about 2 µs, and each waiter kept one alive). Waiters are in
  // arrival order, so only the head of each queue is looked at.
  let shedder: ReturnType<typeof setInterval> | undefined;
  let waiting = 0;
  const SHED_TICK_MS = Math.max(5, Math.min(250, opts.queueTimeout / 10));

  const originOf = (key: string): Origin => {
    let o = origins.get(key);
    if (!o) {
      let t = totals.get(key);
      if (!t) {
        if (totals.size >= MAX_TOTALS) {
          for (const k of totals.keys()) if (!origins.has(k)) totals.delete(k);
        }
        totals.set(key, t = { opened: 0, reused: 0 });
      }
      o = { key, onDead: onDead(key), open: 0, idle: [], waiters: [], queued: 0, totals: t };
      origins.set(key, o);
    }
    return o;
  };

  const nextWaiter = (o: Origin): Waiter | undefined => {
    while (o.waiters.length > 0) {
      const w = o.waiters.shift()!;
      if (!w.done) {
        w.done = true;
        o.queued--;
        waiting--;
        return w;
      }
    }
    return undefined;
  };

  const shed = () => {
    const now = performance.now();
    for (const o of origins.values()) {
      while (o.waiters.length > 0) {
        const w = o.waiters[0];
        if (!w.done && now - w.since < opts.queueTimeout) break;
        o.waiters.shift();
        if (w.done) continue;
        w.done = true;
        o.queued--;
        waiting--;
        w.fail(
          shedError(
            o.key,
            `No connection to upstream "${o.key}" within ${opts.queueTimeout} ms`,
            "queue_timeout",
          ),
        );
      }
    }
    if (waiting === 0) {
      clearInterval(shedder);
      shedder = undefined;
    }
  };

  /**
   * A slot freed up: let the first waiter open a connection. An origin left with nothing is
   * dropped (targets come and go with reloads; the idle sweep does not run without idle ones).
   */
  const slotFreed = (o: Origin) => {
    const w = nextWaiter(o);
    if (w) {
      o.open++;
      w.grant(null);
    } else if (o.open === 0 && o.queued === 0 && origins.get(o.key) === o) origins.delete(o.key);
  };

  const onDead = (key: string) => (conn: H1Connection) => {
    const o = origins.get(key);
    all.delete(conn);
    if (!o) return;
    const i = o.idle.indexOf(conn);
    if (i < 0) return;
    o.idle.splice(i, 1);
    o.open--;
    slotFreed(o);
  };

  const sweep = () => {
    const now = performance.now();
    let idleLeft = 0;
    for (const o of origins.values()) {
      // Connections idle past idleTimeout, or past their upstream's own Keep-Alive timeout. One
      // parked unstamped gets its time now: it was parked since the last sweep.
      for (let i = o.idle.length - 1; i >= 0; i--) {
        const c = o.idle[i];
        if (c.idleSince === UNSTAMPED) {
          c.idleSince = now;
          continue;
        }
        const idle = now - c.idleSince;
        if (idle < opts.idleTimeout && idle < c.idleLimit) continue;
        o.idle.splice(i, 1);
        c.fail(null);
        all.delete(c);
        o.open--;
      }
      idleLeft += o.idle.length;
      if (o.open === 0 && o.queued === 0) origins.delete(o.key);
    }
    if (idleLeft === 0 && sweeper !== undefined) {
      clearInterval(sweeper);
      sweeper = undefined;
    }
  };

  /** Parks a reusable connection among the idle ones; false when there is no room. */
  const park = (o: Origin, conn: H1Connection): boolean => {
    if (o.idle.length >= opts.maxIdlePerUpstream || opts.idleTimeout <= 0) return false;
    conn.park(stampFor(conn), o.onDead);
    o.idle.push(conn);
    if (sweeper === undefined) {
      sweeper = setInterval(sweep, Math.max(50, Math.min(opts.idleTimeout / 2, 5_000)));
      Deno.unrefTimer(sweeper);
    }
    return true;
  };

  const drop = (o: Origin, conn: H1Connection) => {
    conn.fail(null);
    all.delete(conn);
    o.open--;
    slotFreed(o);
  };

  /**
   * Gives a connection to the first waiter once a read, started as for an idle one, has had a few
   * microtasks to complete: a close the upstream already sent (a server may close after any
   * response without saying so, RFC 9112 §9.6), or bytes past the response, is seen first and the
   * waiter opens a new connection instead. Handed over at once, the waiter's request met the
   * close: a 502 for a request with a body, which is not retried. (A timer turn instead cost two
   * thirds of the requests per second of a saturated pool.)
   */
  const handOver = (o: Origin, conn: H1Connection) => {
    conn.park(stampFor(conn), () => {});
    afterMicrotasks(() => {
      if (closed) return; // close() failed it
      if (conn.dead) return drop(o, conn);
      const w = nextWaiter(o);
      if (w?.fresh) {
        // Its slot, for a new connection: a retry must not meet another reused one.
        conn.fail(null);
        all.delete(conn);
        w.grant(null);
      } else if (w) {
        conn.unpark();
        o.totals.reused++;
        w.grant(conn);
      } else if (!park(o, conn)) drop(o, conn);
    });
  };

  const opened = async (o: Origin, connect: () => Promise<H1Connection>) => {
    let c: H1Connection;
    try {
      c = await connect();
    } catch (err) {
      o.open--;
      slotFreed(o);
      throw err;
    }
    if (closed) {
      c.fail(null);
      throw new ProxyError("shutting_down", "Upstream client is closed", { sentNothing: true });
    }
    all.add(c);
    o.totals.opened++;
    c.unpark();
    return c;
  };

  /** The refusal of a request (or WebSocket) that finds `key`'s queue full. */
  const queueFull = (o: Origin, key: string) =>
    shedError(
      key,
      `Upstream "${key}" has ${o.open} connections busy and ${o.queued} requests waiting`,
      "queue_full",
    );

  /**
   * Waits in `o`'s queue; `granted` turns what the waiter is given (a handed-over connection, or
   * null for a place to open one) into its result.
   */
  const enqueue = <T>(
    o: Origin,
    a: { fresh?: boolean; signal?: () => AbortSignal | undefined; granted?: () => void },
    granted: (conn: H1Connection | null) => T | Promise<T>,
  ): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      const signal = a.signal?.();
      if (signal?.aborted) {
        reject(leftQueue(signal, o.key));
        return;
      }
      const onAbort = () => {
        if (w.done) return;
        w.done = true;
        o.queued--;
        waiting--;
        reject(leftQueue(signal, o.key));
      };
      const w: Waiter = {
        done: false,
        fresh: a.fresh === true,
        since: performance.now(),
        grant(conn) {
          signal?.removeEventListener("abort", onAbort);
          a.granted?.();
          try {
            resolve(granted(conn));
          } catch (err) {
            reject(err);
          }
        },
        fail(err) {
          signal?.removeEventListener("abort", onAbort);
          reject(err);
        },
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      // Given-up waiters stay in the array until reached; compact so it stays bounded.
      if (o.waiters.length > 2 * opts.queueLimit + 16) {
        o.waiters = o.waiters.filter((x) => !x.done);
      }
      o.waiters.push(w);
      o.queued++;
      waiting++;
      if (opts.queueTimeout > 0 && shedder === undefined) {
        shedder = setInterval(shed, SHED_TICK_MS);
        Deno.unrefTimer(shedder);
      }
    });

  /**
   * A place taken by a connection the pool does not manage (a WebSocket's): counted as opened
   * and open until the returned function, which may be called more than once, gives it back.
   */
  const held = (o: Origin): () => void => {
    o.totals.opened++;
    let done = false;
    return () => {
      if (done) return;
      done = true;
      o.open--;
      slotFreed(o);
    };
  };

  return {
    acquire(key, connect, a = {}) {
      if (closed) {
        return Promise.reject(
          new ProxyError("shutting_down", "Upstream client is closed", { sentNothing: true }),
        );
      }
      const o = originOf(key);
      if (!a.fresh) {
        while (o.idle.length > 0) {
          const c = o.idle.pop()!;
          // The clock is read only for an upstream that said how long it keeps a connection.
          if (
            !c.dead && (c.idleLimit === Infinity || performance.now() - c.idleSince < c.idleLimit)
          ) {
            c.unpark();
            o.totals.reused++;
            return c;
          }
          // Dead, or idle for nearly as long as the upstream's Keep-Alive timeout: it may be
          // closing it right now.
          if (!c.dead) c.fail(null);
          all.delete(c);
          o.open--;
        }
      }
      if (o.open < opts.maxConnectionsPerUpstream) {
        o.open++;
        return opened(o, connect);
      }
      if (o.queued >= opts.queueLimit) return Promise.reject(queueFull(o, key));
      return enqueue(o, a, (conn) => conn ?? opened(o, connect));
    },

    hold(key, a = {}) {
      if (closed) {
        return Promise.reject(
          new ProxyError("shutting_down", "Upstream client is closed", { sentNothing: true }),
        );
      }
      const o = originOf(key);
      // At the limit with connections parked: the oldest parked one gives its place up (it would
      // otherwise hold it until idle_timeout while the WebSocket waited).
      if (o.open >= opts.maxConnectionsPerUpstream && o.idle.length > 0) {
        const c = o.idle.shift()!;
        c.fail(null);
        all.delete(c);
        o.open--;
      }
      if (o.open < opts.maxConnectionsPerUpstream) {
        o.open++;
        return held(o);
      }
      if (o.queued >= opts.queueLimit) return Promise.reject(queueFull(o, key));
      // fresh: a connection handed over is closed and its place given instead.
      return enqueue(o, { ...a, fresh: true }, () => held(o));
    },

    release(key, conn, reusable) {
      const o = origins.get(key) ?? originOf(key);
      if (reusable && !conn.dead && !closed) {
        if (o.queued > 0) {
          handOver(o, conn);
          return;
        }
        if (park(o, conn)) return;
      }
      drop(o, conn);
    },

    stats(all = false) {
      const rows = [...origins.values()].map((o) => ({
        origin: o.key,
        open: o.open,
        idle: o.idle.length,
        queued: o.queued,
        opened: o.totals.opened,
        reused: o.totals.reused,
      }));
      if (!all) return rows;
      for (const [key, t] of totals) {
        if (origins.has(key)) continue;
        rows.push({ origin: key, open: 0, idle: 0, queued: 0, ...t });
      }
      return rows;
    },

    close() {
      closed = true;
      clearInterval(sweeper);
      sweeper = undefined;
      clearInterval(shedder);
      shedder = undefined;
      // An exchange still waiting on its upstream (shutdown_timeout ran out) is ours to end: 503
      // "shutting down", not the upstream closing the connection (502, charged to the target).
      // One error each: the first request a cut body is logged for tags its error (request id).
      for (const c of all) c.fail(new ProxyError("shutting_down", "Upstream client is closed"));
      all.clear();
      for (const o of origins.values()) {
        o.idle.length = 0;
        let w: Waiter | undefined;
        while ((w = nextWaiter(o))) {
          w.fail(
            new ProxyError("shutting_down", "Upstream client is closed", { sentNothing: true }),
          );
        }
      }
      origins.clear();
    },
  };
}

/**
 * Why a request stopped waiting for a connection: its own timeout (`per_try_timeout`,
 * `timeouts.total`) ran out in the queue, a shed like a full queue's that says nothing against
 * the target, which never saw it; else its client left.
 */
export function leftQueue(signal: AbortSignal | undefined, key: string): ProxyError {
  const why = signal?.reason;
  if (why instanceof ProxyError && why.kind === "timeout") {
    return shedError(
      key,
      `No connection to upstream "${key}" free before the request's timeout`,
      "request_timeout",
    );
  }
  return new ProxyError("client_gone", "Client went away", { sentNothing: true });
}

/** A request shed by the pool (503, nothing sent), saying why for `prox_upstream_shed_total`. */
export function shedError(key: string, message: string, why: ShedReason): ProxyError {
  const e = new ProxyError("overloaded", message, {
    source: key,
    sentNothing: true,
    retryable: false,
  });
  e.shed = why;
  return e;
}

/**
 * Runs `fn` after a few microtasks: a socket read whose data (or end) has already arrived
 * resolves within two (Deno polls a new read at once).
 */
function afterMicrotasks(fn: () => void): void {
  Promise.resolve().then(() => 0).then(() => 0).then(() => 0).then(fn);
}
