// Durations and sizes as written in config files: "500ms", "30s", "1m", "1h30m", "1d"; "10MiB".

const UNIT_MS: Record<string, number> = {
  ms: 1,
  s: 1000,
  sec: 1000,
  secs: 1000,
  second: 1000,
  seconds: 1000,
  m: 60_000,
  min: 60_000,
  mins: 60_000,
  minute: 60_000,
  minutes: 60_000,
  h: 3_600_000,
  hr: 3_600_000,
  hrs: 3_600_000,
  hour: 3_600_000,
  hours: 3_600_000,
  d: 86_400_000,
  day: 86_400_000,
  days: 86_400_000,
};

const PART = /(\d+(?:\.\d+)?)\s*([a-z]+)/gy;

/**
 * Parses a duration such as `1h30m` into milliseconds. Returns an error message (string) when
 * the text is not a duration, so callers can attach it to a located config issue.
 */
export function parseDuration(text: string): number | string {
  const s = text.trim().toLowerCase();
  if (s === "") return "Duration cannot be empty";
  if (/^\d+(\.\d+)?$/.test(s)) {
    return `Duration "${text}" needs a unit: use e.g. "${s}s" or "${s}ms"`;
  }
  let total = 0;
  PART.lastIndex = 0;
  let pos = 0;
  while (pos < s.length) {
    PART.lastIndex = pos;
    const m = PART.exec(s);
    if (!m) {
      return `Invalid duration "${text}": use a number with a unit, e.g. 500ms, 30s, 1m, 1h30m, 1d`;
    }
    const unit = UNIT_MS[m[2]];
    if (unit === undefined) {
      return `Invalid time unit "${m[2]}" in "${text}": use ms, s, m, h or d`;
    }
    total += Number(m[1]) * unit;
    pos = PART.lastIndex;
    while (s[pos] === " ") pos++;
  }
  // Beyond 2^53 ms a value is Infinity or prints as 1e+21 (HSTS max-age, Max-Age attributes).
  if (!(total <= 2 ** 53)) {
    return `Duration "${text}" is too long: use at most 104249991d (2^53 ms)`;
  }
  // 0 means "no limit" for timeouts: "0.4ms" is the shortest wait, not none.
  return total > 0 ? Math.max(1, Math.round(total)) : 0;
}

const SIZE_UNIT: Record<string, number> = {
  b: 1,
  k: 1000,
  kb: 1000,
  kib: 1024,
  m: 1_000_000,
  mb: 1_000_000,
  mib: 1024 * 1024,
  g: 1_000_000_000,
  gb: 1_000_000_000,
  gib: 1024 * 1024 * 1024,
};

/** Parses a byte size such as `10MiB`, `512kb` or `1048576`; returns an error message on failure. */
export function parseSize(text: string | number): number | string {
  if (typeof text === "number") {
    if (!Number.isInteger(text) || text < 0) {
      return `Invalid size ${text}: use a whole number of bytes`;
    }
    return text <= 2 ** 53 ? text : tooLarge(String(text));
  }
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(text);
  if (!m) return `Invalid size "${text}": use bytes or a unit, e.g. 512KiB, 10MiB, 1GiB`;
  const unit = SIZE_UNIT[(m[2] || "b").toLowerCase()];
  if (unit === undefined) {
    return `Invalid size unit "${m[2]}" in "${text}": use B, KB, KiB, MB, MiB, GB or GiB`;
  }
  const bytes = Math.round(Number(m[1]) * unit);
  // Past 2^53 a count of bytes is Infinity or inexact: no limit, and null in /config.
  return bytes <= 2 ** 53 ? bytes : tooLarge(`"${text}"`);
}

function tooLarge(written: string): string {
  return `Size ${written} is too large: use at most 8388608GiB (2^53 bytes)`;
}

/** The longest delay setTimeout takes (2^31 - 1 ms, about 24.8 days); a longer one fires at once. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/** A configured delay for setTimeout: "365d" means as long as a timer can wait, not 1 ms. */
export function timerDelay(ms: number): number {
  return Math.min(ms, MAX_TIMER_MS);
}
