// On-demand TLS (`tls.acme.on_demand`, Caddy's on_demand_tls): a certificate for exactly the name
// a ClientHello asks for, when no configured certificate holds it and the operator's `ask`
// endpoint allows it (GET ?domain=<name>, 200 = allowed). Each name gets an ACME keeper of its own
// (acme.ts, `domains: [name]`): same CA, account and storage, so a restart or another instance
// loads it from storage instead of ordering again; the store's lock puts orders in turn; it is
// renewed like the main certificate while held. Bounded throughout: `max_certificates` keepers
// (least recently used dropped, its files stay), the answers of `ask`, the names that failed.

import type { Logger, Metrics, OnDemandAskResult } from "../ports.ts";
import { startAcme } from "./acme.ts";
import type { AcmeConfig, AcmeController, AcmeTuning, CertificatePair } from "./acme.ts";
import { retryDelay } from "../domain/acme_schedule.ts";
import { errorText } from "./acme_order.ts";
import { timerDelay } from "../config/duration.ts";

/** What a listener asks for a name no certificate of its own holds. */
export interface OnDemandCertificates {
  /**
   * The certificate for `name`: at once when held, a promise while `ask` is asked or an order
   * runs (settles within `on_demand.timeout`), null when refused or failing.
   */
  certificate(name: string): CertificatePair | Promise<CertificatePair | null> | null;
  /** How many on-demand certificates a listener keeps at once (`max_certificates`). */
  max(): number;
  /** Applies a reloaded `tls.acme`: another CA or store lets every keeper go. */
  configure(config: AcmeConfig): void;
  /** Names held now and orders placed since start (tests, status). */
  status(): { held: string[]; orders: number };
  /**
   * Tests: handshakes waiting for a keeper's first certificate now, and the reactions attached
   * to the keepers' `ready()`/failure promises that have not run yet.
   */
  waiting(): { handshakes: number; reactions: number };
  /** The admin `/status` section: at most `limit` names of each list, with their totals. */
  report(limit?: number): OnDemandStatus;
  close(): Promise<void>;
}

/** `onDemand` in the admin API's `/status` (lists cut at `limit`, most recent first). */
export interface OnDemandStatus {
  /** Names held, with their certificate's notAfter (null: first order running) and last use. */
  held: { name: string; notAfter: number | null; lastUsed: number }[];
  heldTotal: number;
  /** Names whose order failed, not tried again before `nextTry` (ms since the epoch). */
  backingOff: { name: string; failures: number; nextTry: number; error: string }[];
  backingOffTotal: number;
  /** Names being asked about or waiting for their first certificate (at most 100). */
  inFlight: number;
  /** Answers of `ask` remembered. */
  askAnswers: number;
  /** First orders placed since start. */
  orders: number;
}

/** How long an answer of `ask` is kept: allowed, and refused (or failed). */
const ALLOWED_MS = 60_000;
const REFUSED_MS = 10_000;
/** Bounds on the answers of `ask` and on the names whose order failed, remembered. */
const MAX_ANSWERS = 10_000;
const MAX_FAILED = 10_000;
/** Names being asked about or ordered at once; more are refused until some are done. */
const MAX_PENDING = 100;
/** Handshakes waiting for one name's first certificate; more get the default one at once. */
const MAX_WAITERS = 1_000;
/** Warnings about failed orders and `ask`: at most WARN_BURST per WARN_WINDOW_MS, then counted. */
const WARN_BURST = 10;
const WARN_WINDOW_MS = 60_000;

/** A DNS name a certificate may be ordered for: letters, digits, hyphens, a dot, no IP address. */
const NAME =
  /^(?=.{1,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

interface Held {
  ctl: AcmeController;
  /** Settles with the error of its first order when that fails. */
  failed: Promise<string>;
  /** Its certificate's notAfter (ms since the epoch), null before the first. */
  notAfter: number | null;
  /** When a handshake last asked for it (ms since the epoch). */
  used: number;
  /** Handshakes waiting for its first certificate (at most MAX_WAITERS), each until its timeout. */
  waiters: Set<(pair: CertificatePair | null) => void>;
}

/** On-demand certificates following `config.on_demand` (which must be set). */
export function createOnDemand(
  initial: AcmeConfig,
  opts: AcmeTuning & { logger: Logger; metrics?: Metrics },
): OnDemandCertificates {
  const { logger, metrics } = opts;
  const now = opts.now ?? Date.now;
  let config = initial;
  const od = () => config.on_demand!;
  /** The keepers, least recently used first. */
  const held = new Map<string, Held>();
  const pending = new Map<string, Promise<CertificatePair | null>>();
  const answers = new Map<string, { allowed: boolean; until: number }>();
  const failed = new Map<string, { until: number; failures: number; error: string }>();
  /**
   * Held names still waiting for their first certificate: with `pending` (whose handshakes wait),
   * at most MAX_PENDING, also once their handshakes gave up and the orders run on.
   */
  const unready = new Set<string>();
  /** When the recent first orders went out (`rate`; at most `rate.orders` kept). */
  let orderTimes: number[] = [];
  let orders = 0;
  let closed = false;
  /** Handshakes waiting in the keepers' `waiters`, and the keepers' reactions not run yet. */
  let waiters = 0;
  let reactions = 0;
  /** Obtains waiting for a keeper's store to open: each gives up at its timeout, or at close. */
  const giveUps = new Set<() => void>();
  /** Names whose keeper's store opens after their handshake gave up (within MAX_PENDING). */
  const opening = new Map<string, Promise<void>>();
  /**
   * Dropped keepers still closing (storing a back-off, releasing the lock): `close` waits for
   * them. Each leaves when closed; keepers are dropped at most once each.
   */
  const closing = new Set<Promise<void>>();

  const bounded = <V>(m: Map<string, V>, max: number) => {
    while (m.size > max) m.delete(m.keys().next().value!);
  };

  // A hostile client naming many names whose orders fail must not flood the log: past the
  // burst, lines go to debug and the next warning says how many were held back.
  let windowStart = -Infinity;
  let inWindow = 0;
  let heldBack = 0;
  const limited = (level: "warn" | "error", msg: string, fields?: Record<string, unknown>) => {
    const t = performance.now();
    if (t - windowStart >= WARN_WINDOW_MS) {
      windowStart = t;
      inWindow = 0;
    }
    if (inWindow >= WARN_BURST) {
      heldBack++;
      return logger.debug(msg, fields);
    }
    inWindow++;
    logger[level](msg, heldBack ? { ...fields, suppressed: heldBack } : fields);
    heldBack = 0;
  };
  /** The keepers' own lines: their news at debug (one info line per certificate here). */
  const keeperLogger: Logger = {
    ...logger,
    log: (level, msg, fields) =>
      level === "warn" || level === "error"
        ? limited(level, msg, fields)
        : logger.debug(msg, fields),
    info: (msg, fields) => logger.debug(msg, fields),
    warn: (msg, fields) => limited("warn", msg, fields),
    error: (msg, fields) => limited("error", msg, fields),
  };

  /** The held certificates to the metrics: gauge and expiry series (held names only). */
  const publish = () => {
    if (!metrics) return;
    const certs: { name: string; notAfterMs: number }[] = [];
    for (const [name, h] of held) {
      if (h.notAfter !== null) certs.push({ name, notAfterMs: h.notAfter });
    }
    metrics.onDemandCertificates(certs);
  };

  /** `ask`'s answer for `name` (cached briefly); a failure or timeout refuses. */
  async function allowed(name: string): Promise<boolean> {
    const t = performance.now();
    const known = answers.get(name);
    if (known && known.until > t) {
      metrics?.onDemandAsk(known.allowed ? "cached_allowed" : "cached_refused");
      logger.debug("ACME on-demand ask answer (cached)", { name, allowed: known.allowed });
      return known.allowed;
    }
    let ok = false;
    let result: OnDemandAskResult = "error";
    try {
      const url = new URL(od().ask!);
      url.searchParams.set("domain", name);
      const res = await fetch(url, {
        redirect: "manual",
        signal: AbortSignal.timeout(timerDelay(od().ask_timeout)),
      });
      await res.body?.cancel();
      ok = res.status === 200;
      result = ok ? "allowed" : "refused";
      const what = ok ? "allowed" : "refused";
      logger.debug(`ACME on-demand name ${what} by ask`, { name, status: res.status });
    } catch (err) {
      limited("warn", "ACME on-demand ask endpoint did not answer; name refused", {
        name,
        error: errorText(err),
      });
    }
    metrics?.onDemandAsk(result);
    answers.delete(name);
    answers.set(name, { allowed: ok, until: performance.now() + (ok ? ALLOWED_MS : REFUSED_MS) });
    bounded(answers, MAX_ANSWERS);
    return ok;
  }

  /** `rate`: whether another first order may go out now (counted when it may). */
  const rateRefusal = (): string | null => {
    const rate = od().rate;
    if (!rate) return null;
    const t = performance.now();
    orderTimes = orderTimes.filter((x) => t - x < rate.per);
    if (orderTimes.length >= rate.orders) {
      return `Cannot order on demand: tls.acme.on_demand.rate allows ${rate.orders} orders per ${rate.per} ms`;
    }
    orderTimes.push(t);
    return null;
  };

  /** Lets a keeper go (its files stay in storage). */
  const drop = (name: string) => {
    const h = held.get(name);
    if (!h) return;
    held.delete(name);
    unready.delete(name);
    wake(h, null);
    const done: Promise<void> = h.ctl.close().catch((err) =>
      logger.warn("Cannot close the ACME on-demand keeper", { name, error: errorText(err) })
    ).finally(() => closing.delete(done));
    closing.add(done);
    publish();
  };

  /** A name whose first order failed: not tried again for a while (doubling). */
  const fail = (name: string, error: string) => {
    drop(name);
    const failures = (failed.get(name)?.failures ?? 0) + 1;
    const delay = retryDelay(failures, {
      random: (opts.random ?? Math.random)(),
      baseMs: opts.retryBaseMs,
      maxMs: 3_600_000,
    });
    failed.delete(name);
    failed.set(name, { until: performance.now() + delay, failures, error });
    bounded(failed, MAX_FAILED);
    limited("warn", "ACME on-demand certificate not obtained", { name, error, retryInMs: delay });
  };

  /** Wakes a keeper's waiting handshakes with its certificate (null: failed, dropped, closing). */
  const wake = (h: Held, pair: CertificatePair | null) => {
    for (const done of [...h.waiters]) done(pair);
  };

  /**
   * The keeper's certificate once there, null on failure or after `timeout`; null at once past
   * MAX_WAITERS handshakes waiting for it. Each waiter leaves the keeper's set at its own
   * timeout: the keeper's one reaction to its first certificate or failure wakes those left.
   */
  function wait(h: Held, until: number): Promise<CertificatePair | null> | null {
    if (h.waiters.size >= MAX_WAITERS || until <= performance.now()) return null;
    return new Promise((resolve) => {
      const done = (pair: CertificatePair | null) => {
        if (!h.waiters.delete(done)) return;
        waiters--;
        clearTimeout(timer);
        resolve(pair);
      };
      const timer = setTimeout(() => done(null), timerDelay(until - performance.now()));
      h.waiters.add(done);
      waiters++;
    });
  }

  /**
   * Whether `started` settled before `until` (performance.now()); false at `until` or at close.
   * Its reactions are the only ones on `started`, one per name being obtained.
   */
  const settledBy = (started: Promise<unknown>, until: number) =>
    new Promise<boolean>((resolve) => {
      const done = (ok: boolean) => {
        if (!giveUps.delete(giveUp)) return;
        clearTimeout(timer);
        resolve(ok);
      };
      const giveUp = () => done(false);
      const timer = setTimeout(giveUp, timerDelay(until - performance.now()));
      giveUps.add(giveUp);
      started.then(() => done(true), () => done(true));
    });

  async function obtain(name: string): Promise<CertificatePair | null> {
    if (!await allowed(name) || closed) return null;
    // From here `timeout` bounds the handshake's wait: the store opening, then the order.
    const until = performance.now() + od().timeout;
    let failedWith = (_: string) => {};
    const failedPromise = new Promise<string>((r) => failedWith = r);
    /** Whether the keeper's next certificate comes from an order it placed (else storage). */
    let ordered = false;
    /** Whether the keeper's last order was refused by `rate` (counted as such, not as failed). */
    let rateLimited = false;
    const h: Held = {
      ctl: null!,
      failed: failedPromise,
      notAfter: null,
      used: now(),
      waiters: new Set(),
    };
    const started = startAcme(
      { ...config, domains: [name], on_demand: undefined },
      {
        ...opts,
        logger: keeperLogger,
        // Nothing to swap: the listeners ask for the certificate at each new handshake.
        onCertificate: (_, facts) => {
          h.notAfter = facts.notAfter;
          const from = ordered ? "order" : "storage";
          if (ordered) metrics?.onDemandOrder("issued");
          ordered = false;
          logger.info("ACME on-demand certificate obtained", {
            name,
            from,
            notAfter: new Date(facts.notAfter).toISOString(),
          });
          if (held.get(name) !== h) return;
          unready.delete(name);
          publish();
        },
        // The rate bounds first orders only; renewals of held certificates go out.
        mayOrder: () => {
          const refused = h.ctl?.current() ? null : rateRefusal();
          rateLimited = refused !== null;
          if (refused) metrics?.onDemandOrder("rate_limited");
          else {
            if (!h.ctl?.current()) orders++;
            ordered = true;
          }
          return refused;
        },
        onOrderFailed: (error) => {
          // A refusal by `rate` was counted as such; a shared back-off counts as a failure.
          if (!rateLimited) metrics?.onDemandOrder("failed");
          ordered = false;
          rateLimited = false;
          if (!h.ctl?.current()) failedWith(error);
        },
      },
    );
    const adopted = started.then((ctl) => {
      h.ctl = ctl;
      if (closed) return ctl.close().then(() => false, () => false);
      // One reaction per keeper, however many handshakes wait for it.
      reactions += 2;
      void ctl.ready().then(() => {
        reactions--;
        wake(h, ctl.current());
      });
      void h.failed.then((error) => {
        reactions--;
        if (held.get(name) === h) fail(name, error);
        wake(h, null);
      });
      held.set(name, h);
      if (!ctl.current()) unready.add(name);
      publish();
      return true;
    });
    if (!await settledBy(adopted, until)) {
      // The store is slow to open (Redis that does not answer): this handshake gets the default
      // certificate; the keeper joins when it opens, and the name is not started again meanwhile.
      opening.set(name, adopted.then(() => {}, (err) => fail(name, errorText(err))));
      void opening.get(name)!.finally(() => opening.delete(name));
      return null;
    }
    if (!await adopted) return null;
    const pair = h.ctl.current() ?? await wait(h, until);
    if (pair) trim();
    return pair;
  }

  /** Names asked about or ordered now, whether a handshake still waits or not. */
  const busy = () => {
    let n = pending.size;
    for (const name of unready) if (!pending.has(name)) n++;
    for (const name of opening.keys()) if (!pending.has(name)) n++;
    return n;
  };

  /**
   * Past `max_certificates`, the least recently used keepers with a certificate go (one still
   * waiting for its first is not cut short; those are at most MAX_PENDING more).
   */
  const trim = () => {
    for (const [name, h] of held) {
      if (held.size <= od().max_certificates) return;
      if (h.ctl.current()) drop(name);
    }
  };

  return {
    certificate(raw) {
      if (closed) return null;
      // ASCII letters only: toLowerCase() maps some others into ASCII (U+212A Kelvin sign to `k`),
      // and a name the client did not send would be asked about and ordered.
      const name = raw.replace(/[A-Z]/g, (c) => c.toLowerCase()).replace(/\.$/, "");
      const h = held.get(name);
      if (h) {
        held.delete(name);
        held.set(name, h);
        h.used = now();
        return h.ctl.current() ?? wait(h, performance.now() + od().timeout);
      }
      if (!NAME.test(name)) return null;
      if ((failed.get(name)?.until ?? 0) > performance.now()) return null;
      const inFlight = pending.get(name);
      if (inFlight) return inFlight;
      if (opening.has(name)) return null;
      if (busy() >= MAX_PENDING) return null;
      const p = obtain(name).catch((err) => {
        fail(name, errorText(err));
        return null;
      }).finally(() => pending.delete(name));
      pending.set(name, p);
      return p;
    },
    max: () => od().max_certificates,
    configure(next) {
      const what = (c: AcmeConfig) => JSON.stringify({ ...c, on_demand: 0, domains: 0 });
      if (what(next) !== what(config)) {
        for (const name of [...held.keys()]) drop(name);
        failed.clear();
      }
      if (next.on_demand?.ask !== config.on_demand?.ask) answers.clear();
      config = next;
      trim();
    },
    status: () => ({ held: [...held.keys()], orders }),
    waiting: () => ({ handshakes: waiters, reactions }),
    report(limit = 100) {
      const t = performance.now();
      const wall = now();
      const heldNow = [...held].reverse().slice(0, limit).map(([name, h]) => ({
        name,
        notAfter: h.notAfter,
        lastUsed: h.used,
      }));
      const off = [...failed].filter(([, f]) => f.until > t);
      return {
        held: heldNow,
        heldTotal: held.size,
        backingOff: off.reverse().slice(0, limit).map(([name, f]) => ({
          name,
          failures: f.failures,
          nextTry: Math.round(wall + f.until - t),
          error: f.error,
        })),
        backingOffTotal: off.length,
        inFlight: busy(),
        askAnswers: answers.size,
        orders,
      };
    },
    async close() {
      closed = true;
      for (const h of held.values()) wake(h, null);
      for (const giveUp of [...giveUps]) giveUp();
      await Promise.all([...held.values()].map((h) => h.ctl.close()));
      held.clear();
      unready.clear();
      publish();
      await Promise.all(pending.values());
      await Promise.all(opening.values());
      // Keepers dropped before (a failed order, `max_certificates`) finish their writes too.
      while (closing.size) await Promise.all(closing);
    },
  };
}
