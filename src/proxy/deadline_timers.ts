// One timer for every exchange deadline (`timeouts.total`, a gRPC call's `grpc-timeout`) instead
// of one `setTimeout` per request: Deno 2.9's setTimeout builds a node `Timeout` (about 1.4 µs to
// set and clear), and under load nearly every deadline is cleared long before it passes. The
// deadlines wait in a binary min-heap that knows each entry's place, so one that is cleared leaves
// at once (nothing waits for its time to pass: 10 s deadlines at 20,000 calls a second would
// otherwise hold 200,000 dead entries). The timer is armed for the earliest deadline, and only
// re-armed when a new one comes earlier, which deadlines of one length never do.

/** A deadline in the heap: cleared with `DeadlineTimers.clear`. */
export interface DeadlineEntry {
  /** When it passes (performance.now() time). */
  readonly at: number;
  /** Its place in the heap; -1 once it fired or was cleared. */
  slot: number;
  readonly fire: () => void;
}

export class DeadlineTimers {
  readonly #heap: DeadlineEntry[] = [];
  #timer: ReturnType<typeof setTimeout> | undefined;
  /** When the armed timer fires (Infinity: none armed). */
  #armedAt = Infinity;
  readonly #now: () => number;

  constructor(now: () => number = () => performance.now()) {
    this.#now = now;
  }

  /** How many deadlines are waiting (for tests and gauges). */
  get size(): number {
    return this.#heap.length;
  }

  /** Calls `fire` once `ms` have passed, unless the entry is cleared first. */
  add(ms: number, fire: () => void): DeadlineEntry {
    const heap = this.#heap;
    const entry: DeadlineEntry = { at: this.#now() + ms, slot: heap.length, fire };
    heap.push(entry);
    this.#up(entry.slot);
    if (entry.at < this.#armedAt) this.#arm();
    return entry;
  }

  /** The deadline will not fire (a no-op once it fired or was cleared). */
  clear(entry: DeadlineEntry): void {
    const i = entry.slot;
    if (i < 0) return;
    entry.slot = -1;
    const heap = this.#heap;
    const last = heap.pop()!;
    if (last !== entry) {
      heap[i] = last;
      last.slot = i;
      this.#down(i);
      this.#up(last.slot);
    }
    // Nothing left to wait for: the timer must not hold the process (or a test) until it fires.
    // An armed timer for a deadline cleared meanwhile is otherwise left to fire and re-arm.
    if (heap.length === 0) this.#disarm();
  }

  #arm(): void {
    this.#disarm();
    const first = this.#heap[0];
    if (first === undefined) return;
    this.#armedAt = first.at;
    // Whole milliseconds, rounded up: a timer that fires a fraction early finds nothing due and
    // would re-arm for 0 ms, spinning until the deadline.
    const delay = Math.max(1, Math.ceil(first.at - this.#now()));
    this.#timer = setTimeout(() => this.#run(), delay);
  }

  #disarm(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#armedAt = Infinity;
  }

  #run(): void {
    this.#timer = undefined;
    this.#armedAt = Infinity;
    const heap = this.#heap;
    const now = this.#now();
    // Each due entry leaves the heap before it fires: a fire that adds or clears deadlines finds
    // the heap in order.
    while (heap.length > 0 && heap[0].at <= now) {
      const first = heap[0];
      this.clear(first);
      try {
        first.fire();
      } catch (err) {
        // One failing callback must not keep the deadlines after it from firing.
        queueMicrotask(() => {
          throw err;
        });
      }
    }
    if (heap.length > 0 && this.#timer === undefined) this.#arm();
  }

  #up(i: number): void {
    const heap = this.#heap;
    const entry = heap[i];
    while (i > 0) {
      const p = (i - 1) >> 1;
      const parent = heap[p];
      if (parent.at <= entry.at) break;
      heap[i] = parent;
      parent.slot = i;
      i = p;
    }
    heap[i] = entry;
    entry.slot = i;
  }

  #down(i: number): void {
    const heap = this.#heap;
    const n = heap.length;
    const entry = heap[i];
    for (;;) {
      const l = 2 * i + 1;
      if (l >= n) break;
      const r = l + 1;
      const c = r < n && heap[r].at < heap[l].at ? r : l;
      const child = heap[c];
      if (child.at >= entry.at) break;
      heap[i] = child;
      child.slot = i;
      i = c;
    }
    heap[i] = entry;
    entry.slot = i;
  }
}

/** The process's deadlines (each worker isolate has its own). */
export const deadlineTimers = new DeadlineTimers();
