// When a listener's accept fails (EMFILE: out of descriptors, ENFILE, ENOBUFS): how long to wait
// before accepting again, and whether to log it. Pure: time comes in as `now` (ms).
// An accept that works between failures does not end the episode (a freed descriptor is taken at
// once and the next accept fails again): only QUIET_MS without a failure does, so a steady
// shortage keeps the longest pause and logs one line a minute, not one per freed descriptor.

/** A failure episode: the pause reached, when accepting was last retried, the log's pace. */
export interface AcceptBackoff {
  delayMs: number;
  /** When the last pause ended (the failure's time plus its delay). */
  retryAt: number;
  loggedAt: number;
  /** Failures since the last line that were not logged. */
  suppressed: number;
}

/** No failure yet. */
export const ACCEPT_BACKOFF_INITIAL: AcceptBackoff = Object.freeze({
  delayMs: 0,
  retryAt: -Infinity,
  loggedAt: -Infinity,
  suppressed: 0,
});

const FIRST_DELAY_MS = 100;
const MAX_DELAY_MS = 5_000;
/** Without a failure for this long after the last retry, the next failure starts over. */
const QUIET_MS = 5_000;
/** At most one log line per episode in this time. */
const LOG_EVERY_MS = 60_000;

/**
 * The pause after an accept failed at `now`: 100 ms, doubling up to 5 s while failures keep
 * coming; `log` for the first of an episode and then once a minute, with `suppressed` the
 * failures left out since the line before.
 */
export function acceptFailed(
  s: AcceptBackoff,
  now: number,
): { state: AcceptBackoff; delayMs: number; log: boolean; suppressed: number } {
  const fresh = now - s.retryAt >= QUIET_MS;
  const delayMs = fresh ? FIRST_DELAY_MS : Math.min(Math.max(s.delayMs * 2, 1), MAX_DELAY_MS);
  const log = fresh || now - s.loggedAt >= LOG_EVERY_MS;
  const suppressed = fresh ? 0 : s.suppressed;
  const state: AcceptBackoff = {
    delayMs,
    retryAt: now + delayMs,
    loggedAt: log ? now : s.loggedAt,
    suppressed: log ? 0 : suppressed + 1,
  };
  return { state, delayMs, log, suppressed: log ? suppressed : 0 };
}
