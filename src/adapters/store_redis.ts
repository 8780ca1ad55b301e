// The Redis RateLimitStore: counters shared by every Prox instance that points at the same Redis.
// One atomic Lua script per algorithm, one round trip per decision (EVALSHA, EVAL on NOSCRIPT),
// Redis's own clock (TIME) so instances with skewed clocks agree, and PEXPIRE so idle keys vanish
// exactly when their state would be "fresh" again. Scripts mirror src/domain/rate_limit.ts.

import { Redis } from "ioredis";
import type { RateLimitDecision } from "../domain/rate_limit.ts";
import type { RateLimitQuery, RateLimitStore } from "../ports.ts";
import { timerDelay } from "../config/duration.ts";

/** Options for createRedisStore. */
export interface RedisStoreOptions {
  /** `redis://[user:pass@]host:port[/db]` or `rediss://…` for TLS. */
  url: string;
  /** The password, when not in the url (`password_env`). */
  password?: string;
  /** Prepended to every key (e.g. `prox:rl:`). */
  prefix: string;
  /** Per-command timeout in ms; a slower answer counts as an error. */
  timeoutMs: number;
  /** Connections used round-robin (each one pipelines automatically). */
  poolSize?: number;
  /** Whose clock decides: Redis's TIME (default; instances agree) or the caller's `now` (tests). */
  clock?: "redis" | "caller";
  /** Commands one connection may have waiting for an answer (default MAX_WAITING); more fail. */
  maxWaiting?: number;
}

/**
 * Commands a connection may have waiting for Redis's answer. A command that timed out stays in
 * ioredis's queue until Redis answers it, about 4 KB each: a Redis that stalls (a paused process,
 * a half-open connection) would otherwise collect one per request for as long as it stalls.
 */
export const MAX_WAITING = 1024;

/**
 * The oldest Redis the scripts run on: they read TIME and then write, which Redis allows only
 * under effects replication, its default from 5.0 (HSET of several fields needs 4.0).
 */
export const REDIS_MIN_VERSION = "5.0";

/**
 * Why the Redis whose `INFO server` answer is `info` cannot run the rate-limit scripts, or null
 * (also when it names no version: a compatible server is tried).
 */
export function redisTooOld(info: string): string | null {
  const m = /^redis_version:(\d+)\.(\d+)(\S*)/m.exec(info);
  if (!m) return null;
  const [major, minor] = REDIS_MIN_VERSION.split(".").map(Number);
  const got = [Number(m[1]), Number(m[2])];
  if (got[0] > major || (got[0] === major && got[1] >= minor)) return null;
  return `Redis ${m[1]}.${m[2]}${m[3]} is too old: rate_limit_store needs Redis ` +
    `${REDIS_MIN_VERSION} or later (its scripts read TIME, then write)`;
}

/** A RateLimitStore backed by Redis; close() disconnects. */
export interface RedisRateLimitStore extends RateLimitStore {
  close(): Promise<void>;
}

// Shared prelude: Redis time in whole ms, and integer/decimal formatting that keeps precision
// (Lua's default number → string conversion keeps only 14 digits).
const PRELUDE = `
local now
if ARGV[4] then now = tonumber(ARGV[4]) else
  local tm = redis.call('TIME')
  now = tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000)
end
local function int(x) return string.format('%.0f', x) end
-- With the caller's clock (tests), expiry still runs on Redis's: a minute's grace keeps a key
-- that the caller's time has not yet expired (a stalled test must not see it vanish early).
local function save(key, ttl, ...)
  if ttl > 0 then
    redis.call('HSET', key, ...)
    if ARGV[4] then ttl = ttl + 60000 end
    redis.call('PEXPIRE', key, int(ttl))
  else
    redis.call('DEL', key)
  end
end
`;

const TOKEN_BUCKET = PRELUDE + `
local rate, cost, burst = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local cap = burst * cost
local s = redis.call('HMGET', KEYS[1], 't', 'n')
local tokens = cap
if s[1] then
  -- A stored time ahead of now is Redis's clock stepped back: refill resumes from now.
  local st, sn = tonumber(s[1]), tonumber(s[2])
  local elapsed = math.max(0, now - st)
  if elapsed * rate >= cap - sn then tokens = cap else tokens = sn + elapsed * rate end
end
local allowed, retry = 0, 0
if tokens >= cost then allowed = 1; tokens = tokens - cost
else retry = math.ceil((cost - tokens) / rate) end
local reset = math.ceil((cap - tokens) / rate)
save(KEYS[1], reset, 't', int(now), 'n', int(tokens))
return {allowed, math.floor(tokens / cost), reset, retry}
`;

const FIXED_WINDOW = PRELUDE + `
local limit, P = tonumber(ARGV[1]), tonumber(ARGV[2])
local ws = now - (now % P)
local count = 0
local s = redis.call('HMGET', KEYS[1], 't', 'n')
-- A later window's count (Redis's clock stepped back) counts in the current window.
if s[1] and tonumber(s[1]) >= ws then count = tonumber(s[2]) end
local allowed, retry = 0, 0
if count < limit then allowed = 1; count = count + 1 end
local reset = ws + P - now
if allowed == 0 then retry = reset end
save(KEYS[1], reset, 't', int(ws), 'n', int(count))
return {allowed, limit - count, reset, retry}
`;

const SLIDING_WINDOW = PRELUDE + `
local limit, P = tonumber(ARGV[1]), tonumber(ARGV[2])
local start = now - (now % P)
local curr, prev = 0, 0
local s = redis.call('HMGET', KEYS[1], 't', 'n', 'p')
if s[1] then
  local st, sn, sp = tonumber(s[1]), tonumber(s[2]), tonumber(s[3])
  if st == start then curr = sn; prev = sp
  elseif st == start - P then prev = sn
  elseif st > start then curr = sn; prev = sp end
end
local e = now - start
local wp = prev * math.max(0, P - e)
local allowed, retry = 0, 0
if wp + (curr + 1) * P <= limit * P then allowed = 1; curr = curr + 1
elseif curr < limit then
  retry = math.max(1, P - math.floor(((limit - curr - 1) * P) / prev) - e)
else
  retry = P - e + math.max(0, P - math.floor(((limit - 1) * P) / curr))
end
local remaining = math.max(0, math.floor((limit * P - wp - curr * P) / P))
local reset = 0
if curr > 0 then reset = 2 * P - e elseif prev > 0 then reset = P - e end
save(KEYS[1], reset, 't', int(start), 'n', int(curr), 'p', int(prev))
return {allowed, remaining, reset, retry}
`;

const GCRA = PRELUDE + `
local R, P, burst = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local q, r = math.floor(P / R), P % R
local a, b = now, 0
local s = redis.call('HMGET', KEYS[1], 't', 'n')
if s[1] then
  local st, sn = tonumber(s[1]), tonumber(s[2])
  if st > now or (st == now and sn > 0) then a = st; b = sn end
end
local limit = burst * P
-- More than burst·T ahead: Redis's clock stepped back.
if (a - now) * R + b > limit then a = now + math.floor(limit / R); b = limit % R end
local na, nb = a + q, b + r
if nb >= R then na = na + 1; nb = nb - R end
local allowed, retry, sa, sb = 0, 0, a, b
if (na - now) * R + nb <= limit then allowed = 1; sa = na; sb = nb
else retry = math.max(1, math.ceil(((na - now) * R + nb - limit) / R)) end
local ahead = (sa - now) * R + sb
local reset = math.ceil(ahead / R)
save(KEYS[1], reset, 't', int(sa), 'n', int(sb))
return {allowed, math.max(0, math.floor((limit - ahead) / P)), reset, retry}
`;

const SCRIPTS = {
  token_bucket: TOKEN_BUCKET,
  fixed_window: FIXED_WINDOW,
  sliding_window: SLIDING_WINDOW,
  gcra: GCRA,
} as const;

type ScriptFn = (key: string, ...args: string[]) => Promise<[number, number, number, number]>;

/** The password `password_env` names, read from Prox's environment (validation required it). */
export function passwordFromEnv(name: string | undefined): { password?: string } {
  const password = name === undefined ? undefined : Deno.env.get(name);
  return password === undefined ? {} : { password };
}

/**
 * The url and auth options to give ioredis for `password` (password_env's). ioredis takes the
 * url's user and password before its options, and a url with a user and no password
 * (`redis://prox@host`) gives an empty password that would win: the user goes with the password
 * as options, out of the url.
 */
export function redisTarget(
  url: string,
  password: string | undefined,
): [string, { username?: string; password?: string }] {
  if (password === undefined) return [url, {}];
  try {
    const u = new URL(url);
    if (u.username === "" && u.password === "") return [url, { password }];
    const username = decodeURIComponent(u.username);
    u.username = "";
    u.password = "";
    return [u.href, username === "" ? { password } : { username, password }];
  } catch {
    return [url, { password }]; // (validation refuses such a url)
  }
}

/** Redacts the password from a Redis URL for messages. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = "***";
    // ioredis also takes the password from the query (`?password=pw`).
    for (const name of [...u.searchParams.keys()]) {
      if (/pass|secret|token/i.test(name)) u.searchParams.set(name, "***");
    }
    return u.toString();
  } catch {
    return "(invalid url)";
  }
}

/** Reads a connection error for a message: Node errors may carry only a code, or several errors. */
export function reasonOf(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const code = (err as { code?: unknown }).code;
  const inner = err instanceof AggregateError ? err.errors.find((e) => e instanceof Error) : null;
  return err.message || (inner ? reasonOf(inner) : typeof code === "string" ? code : err.name);
}

/** Connects lazily to Redis; commands fail fast (no offline queue) while it is unreachable. */
export function createRedisStore(options: RedisStoreOptions): RedisRateLimitStore {
  // A longer delay (30d) fires after 1 ms in every timer, ioredis's too: all decisions failed.
  const opts = { ...options, timeoutMs: timerDelay(options.timeoutMs) };
  const shown = redactUrl(opts.url);
  const clients = Array.from({ length: Math.max(1, opts.poolSize ?? 1) }, () => {
    const [url, auth] = redisTarget(opts.url, opts.password);
    const c = new Redis(url, {
      ...auth,
      lazyConnect: true,
      enableOfflineQueue: false,
      enableAutoPipelining: true,
      maxRetriesPerRequest: 0,
      commandTimeout: opts.timeoutMs,
      // A connection with commands waiting and no byte from Redis for this long is dead (a
      // half-open or black-holed connection stays "ready" until TCP gives up, up to ~15 min):
      // drop it and reconnect.
      socketTimeout: deadAfterMs(opts.timeoutMs),
      // After a failover behind one address (a DNS name, a VIP, a Kubernetes service), the old
      // primary answers every script (they write) with READONLY on the open connection for good,
      // and on_error decided every request: a new connection reaches the new primary.
      reconnectOnError: (err: Error) => /^READONLY/.test(err.message),
      connectTimeout: Math.max(opts.timeoutMs, 1_000),
      retryStrategy: (times: number) => Math.min(100 * 2 ** Math.min(times, 5), 2_000),
    });
    // Errors surface through rejected commands; without a listener ioredis prints to the console.
    // The last one says why the connection is down (refused, WRONGPASS, certificate…).
    // `tooOld`: the Redis this connection reached cannot run the scripts (redisTooOld).
    const entry = { c, first: Promise.resolve(), lastError: "", tooOld: "" };
    c.on("error", (err: unknown) => entry.lastError = reasonOf(err));
    c.on("ready", () => {
      entry.lastError = "";
      // Asked at each connection (a failover may reach another Redis); a failure says nothing.
      c.info("server").then((info) => entry.tooOld = redisTooOld(info) ?? "", () => {});
    });
    // A Redis that shuts down closes the connection without an error.
    c.on("close", () => entry.lastError ||= "connection closed");
    for (const [name, lua] of Object.entries(SCRIPTS)) {
      c.defineCommand(`prox_${name}`, { numberOfKeys: 1, lua });
    }
    // The first connection attempt may be waited for (up to the timeout); later outages fail fast.
    entry.first = c.connect().then(() => {}, () => {});
    return entry;
  });
  let next = 0;
  const maxWaiting = opts.maxWaiting ?? MAX_WAITING;

  return {
    async consume(key: string, q: RateLimitQuery): Promise<RateLimitDecision> {
      const conn = clients[next++ % clients.length];
      const { c: client, first } = conn;
      // What the wait for the first connection took is not the command's to spend again:
      // `timeout` bounds the whole decision (the two added up to twice the timeout).
      let left = 0;
      if (client.status !== "ready") {
        const start = performance.now();
        await settleWithin(first, opts.timeoutMs);
        left = Math.max(1, opts.timeoutMs - (performance.now() - start));
      }
      const p = q.policy;
      const fn = (client as unknown as Record<string, ScriptFn>)[`prox_${p.algorithm}`];
      const args = [String(p.requests), String(p.periodMs), String(p.burst)];
      if (opts.clock === "caller") args.push(String(Math.floor(q.now)));
      let out: [number, number, number, number];
      // Every decision would fail with a script error: said as what it is.
      if (conn.tooOld) throw new Error(`Cannot use Redis at "${shown}": ${conn.tooOld}`);
      try {
        if (client.status !== "ready") {
          const why = conn.lastError ? `: ${conn.lastError}` : "";
          throw new Error(`not connected (${client.status}${why})`);
        }
        // Sent and not answered, plus those batched for this tick's pipeline.
        const waiting = client.commandQueue.length + client.autoPipelineQueueSize;
        if (waiting >= maxWaiting) throw new Error(`not answering (${waiting} commands waiting)`);
        const sent = fn.call(client, `${opts.prefix}${q.limiter}:${key}`, ...args);
        out = left > 0 ? await within(sent, left) : await sent;
        // Something else on the port (a proxy, a "compatible" server) may answer otherwise: read
        // as is, "+OK" was a refusal with `Retry-After: NaN` for every request, not on_error.
        if (!isDecision(out)) {
          throw new Error(`unexpected answer ${String(JSON.stringify(out)).slice(0, 80)}`);
        }
      } catch (err) {
        let why = err instanceof Error ? err.message : String(err);
        // ioredis's words for "the connection dropped with this command sent" (no retries here).
        if (why.startsWith("Reached the max retries per request")) why = "connection lost";
        throw new Error(`Cannot reach Redis at "${shown}": ${why}`, { cause: err });
      }
      return { allowed: out[0] === 1, remaining: out[1], resetMs: out[2], retryAfterMs: out[3] };
    },
    async close(): Promise<void> {
      await Promise.all(clients.map(async ({ c }) => {
        try {
          if (c.status === "ready") await c.quit();
        } catch { /* already gone */ }
        c.disconnect();
      }));
    },
  };
}

/** True for the scripts' answer: [allowed 0|1, remaining, resetMs, retryAfterMs], integers ≥ 0. */
function isDecision(out: unknown): out is [number, number, number, number] {
  return Array.isArray(out) && out.length === 4 && (out[0] === 0 || out[0] === 1) &&
    out.every((v) => Number.isSafeInteger(v) && v >= 0);
}

/** How long a connection may owe answers without Redis sending anything before it is replaced. */
export function deadAfterMs(timeoutMs: number): number {
  return timerDelay(Math.max(2_000, 10 * timeoutMs));
}

/** `p`, or a rejection as ioredis's own command timeout words it once `ms` have passed. */
async function within<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error("Command timed out")), ms);
  });
  p.catch(() => {}); // its own timeout still ends it (and frees its place in the queue) later
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** Waits for `p` but at most `ms`; never rejects. */
async function settleWithin(p: Promise<void>, ms: number): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([p, new Promise<void>((r) => timer = setTimeout(r, ms))]);
  clearTimeout(timer);
}
