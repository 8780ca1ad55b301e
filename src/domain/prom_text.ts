// Reads the Prometheus text exposition format (0.0.4) into samples, for `prox top`, which
// scrapes a running Prox's own `/metrics`. Only what Prox writes needs to be read: comments,
// `name{label="value",…} value [timestamp]` lines, escaped label values.

/** One sample line: the metric name (with any `_bucket`/`_sum`/`_count` suffix) and its labels. */
export interface PromSample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*/;

/**
 * Parses exposition text; `want` picks the metric names to keep (the others are not parsed
 * further). Returns a string describing the first malformed line instead of samples.
 */
export function parsePromText(
  text: string,
  want: (name: string) => boolean = () => true,
): PromSample[] | string {
  const out: PromSample[] = [];
  const lines = text.split("\n");
  for (let n = 0; n < lines.length; n++) {
    const line = lines[n].trim();
    if (line === "" || line.startsWith("#")) continue;
    const name = NAME.exec(line)?.[0];
    if (!name) return `line ${n + 1}: no metric name in "${line.slice(0, 60)}"`;
    if (!want(name)) continue;
    let i = name.length;
    const labels: Record<string, string> = {};
    if (line[i] === "{") {
      i++;
      for (;;) {
        while (line[i] === " ") i++;
        if (line[i] === "}") break;
        const key = LABEL.exec(line.slice(i))?.[0];
        if (!key || line[i + key.length] !== "=" || line[i + key.length + 1] !== '"') {
          return `line ${n + 1}: malformed labels in "${line.slice(0, 60)}"`;
        }
        i += key.length + 2;
        let value = "";
        for (; i < line.length && line[i] !== '"'; i++) {
          if (line[i] === "\\" && i + 1 < line.length) {
            i++;
            value += line[i] === "n" ? "\n" : line[i];
          } else value += line[i];
        }
        if (i >= line.length) return `line ${n + 1}: unterminated label value`;
        labels[key] = value;
        i++;
        while (line[i] === " ") i++;
        if (line[i] === ",") i++;
        else if (line[i] !== "}") {
          return `line ${n + 1}: malformed labels in "${line.slice(0, 60)}"`;
        }
      }
      i++;
    }
    const value = parseValue(line.slice(i).trim().split(/\s+/)[0] ?? "");
    if (value === undefined) return `line ${n + 1}: no number in "${line.slice(0, 60)}"`;
    out.push({ name, labels, value });
  }
  return out;
}

function parseValue(s: string): number | undefined {
  if (s === "+Inf" || s === "Inf") return Infinity;
  if (s === "-Inf") return -Infinity;
  if (s === "NaN") return NaN;
  if (s === "" || !/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(s)) return undefined;
  return Number(s);
}

/**
 * Estimates a quantile from cumulative histogram buckets (`le` → count) as Prometheus's
 * `histogram_quantile` does: linear within the bucket it falls in, the highest finite bound when
 * it falls in `+Inf`. null without observations.
 */
export function bucketQuantile(q: number, buckets: [le: number, count: number][]): number | null {
  const sorted = [...buckets].sort((a, b) => a[0] - b[0]);
  const total = sorted.at(-1)?.[1] ?? 0;
  if (total <= 0 || sorted.at(-1)![0] !== Infinity) return null;
  const rank = q * total;
  let prevLe = 0;
  let prevCount = 0;
  for (const [le, count] of sorted) {
    if (count >= rank && count > prevCount) {
      if (le === Infinity) return sorted.length > 1 ? sorted.at(-2)![0] : null;
      return prevLe + (le - prevLe) * (rank - prevCount) / (count - prevCount);
    }
    prevLe = le;
    prevCount = count;
  }
  return null;
}
