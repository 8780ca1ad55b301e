// "Did you mean …?": the closest candidate by edit distance.

/** Edit distance between two short strings (Levenshtein). */
export function distance(a: string, b: string): number {
  const prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let diag = prev[0];
    prev[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = prev[j];
      prev[j] = Math.min(prev[j] + 1, prev[j - 1] + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1));
      diag = tmp;
    }
  }
  return prev[b.length];
}

/** The closest candidate within a typo's reach, or undefined. */
export function suggest(input: string, candidates: readonly string[]): string | undefined {
  const lower = input.toLowerCase();
  let best: string | undefined;
  let bestD = Infinity;
  for (const c of candidates) {
    const d = distance(lower, c.toLowerCase());
    if (d < bestD) {
      bestD = d;
      best = c;
    }
  }
  const reach = Math.max(2, Math.floor(input.length / 3));
  if (bestD <= reach) return best;
  // A longer or shorter spelling of one candidate: "warning" for warn, "least_conn".
  const stem = candidates.filter((c) => {
    const l = c.toLowerCase();
    return Math.min(l.length, lower.length) >= 3 && (l.startsWith(lower) || lower.startsWith(l));
  });
  if (stem.length === 1) return stem[0];
  // The singular or plural of one candidate: "retry" for retries, "header" for headers.
  const singular = (w: string) => w.replace(/ies$/, "y").replace(/s$/, "");
  const number = candidates.filter((c) => singular(c.toLowerCase()) === singular(lower));
  return number.length === 1 && lower.length >= 3 ? number[0] : undefined;
}
