// Counters and histograms for the per-request path. prom-client hashes and validates the label
// set on every `inc`/`observe` (~4 µs and ~1 KB of garbage per proxied request for the four
// request metrics); these keep one plain cell per label set, found through nested maps, and hand
// prom-client's Registry the same `get()` shape its own metrics produce, so the text exposition,
// JSON, worker aggregation and pruning work unchanged.
//
// Bounded: label values come from the config (route ids, upstream URLs), a fixed method set and
// three-digit statuses; past `maxCells` label sets, new ones are counted under one overflow
// label set (first value `(overflow)`) rather than growing the maps.

type Labels = Record<string, string>;

/** One value in prom-client's `get()` format. */
interface MetricValue {
  labels: Record<string, string | number>;
  value: number;
  metricName?: string;
}

/** A metric as prom-client's Registry reads it. */
interface MetricData {
  name: string;
  help: string;
  type: "counter" | "histogram";
  values: MetricValue[];
  aggregator: "sum";
}

/** What prom-client's Registry needs from a metric. */
interface RegistryMetric {
  readonly name: string;
  readonly help: string;
  get(): Promise<MetricData>;
  reset(): void;
}

/** Cells for up to three label values, in nested maps: no key string per observation. */
class Cells<T extends { labels: Labels }> {
  #root = new Map<string, Map<string, Map<string, T>>>();
  #size = 0;
  #names: readonly string[];
  #make: (labels: Labels) => T;
  #max: number;

  constructor(names: readonly string[], make: (labels: Labels) => T, max: number) {
    this.#names = names;
    this.#make = make;
    this.#max = max;
  }

  get(a: string, b = "", c = ""): T {
    const hit = this.#root.get(a)?.get(b)?.get(c);
    if (hit !== undefined) return hit;
    if (this.#size < this.#max) return this.#insert(a, b, c);
    return this.#root.get(OVERFLOW)?.get("")?.get("") ?? this.#insert(OVERFLOW, "", "");
  }

  #insert(a: string, b: string, c: string): T {
    const values = [a, b, c];
    const labels: Labels = {};
    this.#names.forEach((n, i) => labels[n] = values[i]);
    const cell = this.#make(labels);
    let m1 = this.#root.get(a);
    if (!m1) this.#root.set(a, m1 = new Map());
    let m2 = m1.get(b);
    if (!m2) m1.set(b, m2 = new Map());
    m2.set(c, cell);
    this.#size++;
    return cell;
  }

  *[Symbol.iterator](): Generator<T> {
    for (const m1 of this.#root.values()) {
      for (const m2 of m1.values()) yield* m2.values();
    }
  }

  /** Drops every cell for which `drop` is true, in one pass over them. */
  removeWhere(drop: (cell: T) => boolean): void {
    for (const [a, m1] of this.#root) {
      for (const [b, m2] of m1) {
        for (const [c, cell] of m2) {
          if (!drop(cell)) continue;
          m2.delete(c);
          this.#size--;
        }
        if (m2.size === 0) m1.delete(b);
      }
      if (m1.size === 0) this.#root.delete(a);
    }
  }

  clear(): void {
    this.#root = new Map();
    this.#size = 0;
  }
}

/** The first label value new label sets are counted under once a metric holds `maxCells`. */
const OVERFLOW = "(overflow)";

/** Most label sets per metric. */
const MAX_CELLS = 10_000;

/** What both metric kinds share: identity, their cells, pruning and reset. */
abstract class HotMetric<T extends { labels: Labels }> implements RegistryMetric {
  readonly name: string;
  readonly help: string;
  protected readonly cells: Cells<T>;

  constructor(
    o: { name: string; help: string; labelNames: readonly string[]; maxCells?: number },
    make: (labels: Labels) => T,
  ) {
    this.name = o.name;
    this.help = o.help;
    this.cells = new Cells(o.labelNames, make, o.maxCells ?? MAX_CELLS);
  }

  /** The cell of one label set (values in `labelNames` order). */
  cell(a: string, b?: string, c?: string): T {
    return this.cells.get(a, b, c);
  }

  abstract get(): Promise<MetricData>;

  protected data(type: MetricData["type"], values: MetricValue[]): Promise<MetricData> {
    return Promise.resolve({ name: this.name, help: this.help, type, values, aggregator: "sum" });
  }

  /** Drops every cell whose labels include all of `labels`. */
  remove(labels: Record<string, string | number>): void {
    const want = Object.entries(labels).map(([k, v]) => [k, String(v)]);
    this.cells.removeWhere((cell) => want.every(([k, v]) => cell.labels[k] === v));
  }

  /**
   * Drops every cell whose `label` has a value outside `keep` (the overflow cell stays), in one
   * pass (a reload that removes many routes must not hold up requests); returns those values.
   */
  retain(label: string, keep: ReadonlySet<string>): Set<string> {
    const gone = new Set<string>();
    this.cells.removeWhere((c) => {
      const v = c.labels[label];
      if (v === OVERFLOW || keep.has(v)) return false;
      gone.add(v);
      return true;
    });
    return gone;
  }

  reset(): void {
    this.cells.clear();
  }
}

interface CounterCell {
  labels: Labels;
  value: number;
}

/** A labelled counter: `cell(...values).value += n`. */
export class HotCounter extends HotMetric<CounterCell> {
  constructor(o: { name: string; help: string; labelNames: readonly string[]; maxCells?: number }) {
    super(o, (labels) => ({ labels, value: 0 }));
  }

  get(): Promise<MetricData> {
    const values: MetricValue[] = [];
    for (const c of this.cells) values.push({ labels: { ...c.labels }, value: c.value });
    return this.data("counter", values);
  }
}

interface HistogramCell {
  labels: Labels;
  /** Observations per bucket (not cumulative); the last slot is above every bound. */
  counts: Float64Array;
  sum: number;
  count: number;
}

/** A labelled histogram: `observe(cell, value)`. */
export class HotHistogram extends HotMetric<HistogramCell> {
  readonly #bounds: readonly number[];

  constructor(o: {
    name: string;
    help: string;
    labelNames: readonly string[];
    buckets: readonly number[];
    maxCells?: number;
  }) {
    const bounds = [...o.buckets].sort((a, b) => a - b);
    super(
      o,
      (labels) => ({ labels, counts: new Float64Array(bounds.length + 1), sum: 0, count: 0 }),
    );
    this.#bounds = bounds;
  }

  /** Records one observation in `cell`. */
  observe(cell: HistogramCell, value: number): void {
    const bounds = this.#bounds;
    let i = 0;
    while (i < bounds.length && value > bounds[i]) i++;
    cell.counts[i]++;
    cell.sum += value;
    cell.count++;
  }

  get(): Promise<MetricData> {
    const values: MetricValue[] = [];
    const bucket = `${this.name}_bucket`;
    for (const c of this.cells) {
      let acc = 0;
      this.#bounds.forEach((le, i) => {
        acc += c.counts[i];
        values.push({ labels: { le, ...c.labels }, value: acc, metricName: bucket });
      });
      values.push({ labels: { le: "+Inf", ...c.labels }, value: c.count, metricName: bucket });
      values.push({ labels: { ...c.labels }, value: c.sum, metricName: `${this.name}_sum` });
      values.push({ labels: { ...c.labels }, value: c.count, metricName: `${this.name}_count` });
    }
    return this.data("histogram", values);
  }
}
