// Fair turns for the engine's connections, under many busy ones.
//
// Every socket read JavaScript starts is a future in Deno's op driver, and one task polls them
// all; tokio lets that task complete 128 I/O operations per poll, and the ready sockets past
// those wait for later polls in an order that keeps reversing (docs/performance.md, eighth
// round). With hundreds of connections whose next requests were already in the kernel, some
// waited seconds while others were served hundreds of times. So at most LIMIT connections read
// and serve a request at a time, in the order they came; the rest wait for a turn here, their
// bytes in the kernel. A turn that lasts too long ends while its connection goes on outside the
// count: after two ticks of a read that found nothing (an idle keep-alive connection, 5–10 ms), or
// two of serving one request (a slow upstream or a long answer). So idle connections, and requests
// waiting for their upstreams, hold no turns for long, whether or not others wait: the ticker runs
// while any turn is held.

import { SlotSet } from "../../domain/slot_set.ts";
import type { Slotted } from "../../domain/slot_set.ts";

/**
 * Connections reading or serving a request at once. Each reads its client, then its upstream: two
 * reads apiece fill tokio's budget of 128 per poll.
 */
export const LIMIT = 64;
/** The ticker's period, ms. */
export const TICK_MS = 5;
/** Ticks a turn may wait for a request's bytes before it counts as idle (5–10 ms). */
const IDLE_TICKS = 2;
/**
 * Ticks a turn may serve one request before it counts as idle (5–10 ms). A request that waits
 * longer for its upstream waits outside the count: 20 ticks (0.1 s) let at most 64 requests per
 * 0.1 s through behind an upstream that answers that slowly, 640/s (1,128 req/s on the engine
 * against 2,472 on Deno.serve with a 50 ms upstream, bench/slow_upstream.ts).
 */
const BUSY_TICKS = 2;

/** One connection's turn; the gate keeps the fields on it. */
export interface Reader extends Slotted {
  /** The tick at which its turn counts as idle, or -1 while it holds none. */
  turnEnds: number;
}

export class ReadGate {
  #free: number;
  /** Connections waiting for a turn, first come first served (`#head` is the next). */
  #queue: ((v: void) => void)[] = [];
  /** The reader of each waiter in `#queue`, at the same index. */
  #readers: (Reader | undefined)[] = [];
  #head = 0;
  /** The readers holding a turn. */
  #holding = new SlotSet<Reader>();
  #tick = 0;
  #stop: (() => void) | null = null;

  constructor(
    readonly limit = LIMIT,
    /** Calls `fn` every `ms`; returns a stop function (an unref'd interval by default). */
    private readonly every = (fn: () => void, ms: number) => {
      const id = setInterval(fn, ms);
      Deno.unrefTimer(id);
      return () => clearInterval(id);
    },
  ) {
    this.#free = limit;
  }

  /** Connections waiting for a turn. */
  get waiting(): number {
    return this.#queue.length - this.#head;
  }

  /** Turns held (by readers still reading, or idle ones not yet found out). */
  get held(): number {
    return this.limit - this.#free;
  }

  /**
   * Takes a turn for `r`: undefined when it has one at once (no await on the common path), else
   * a promise that resolves when its turn comes.
   */
  enter(r: Reader): Promise<void> | undefined {
    if (this.#free > 0 && this.waiting === 0) {
      this.#free--;
      this.#hold(r);
      return undefined;
    }
    // The turn is taken for it when it is passed on (#pass): no `then` per wait. A waiter lives
    // for as long as the queue ahead of it, across scavenges, so what it holds is promoted.
    this.#readers.push(r);
    return new Promise<void>((resolve) => this.#queue.push(resolve));
  }

  /**
   * Marks `r`'s turn as serving a request: it may then last BUSY_TICKS ticks before it ends (a
   * slow upstream, a long answer) and goes to a waiter, if any.
   */
  busy(r: Reader): void {
    if (r.turnEnds >= 0) r.turnEnds = this.#tick + BUSY_TICKS;
  }

  /** Ends `r`'s turn, if it still has one (its request was served, or its read failed). */
  leave(r: Reader): void {
    if (r.turnEnds < 0) return;
    r.turnEnds = -1;
    this.#holding.delete(r);
    this.#pass();
  }

  #hold(r: Reader): void {
    r.turnEnds = this.#tick + IDLE_TICKS;
    this.#holding.add(r);
    if (this.#stop === null) this.#stop = this.every(() => this.#onTick(), TICK_MS);
  }

  /** A turn came free: the next waiter takes it, or it is kept. */
  #pass(): void {
    if (this.#head < this.#queue.length) {
      const next = this.#queue[this.#head];
      const reader = this.#readers[this.#head]!;
      this.#queue[this.#head] = undefined as never;
      this.#readers[this.#head++] = undefined;
      if (this.#head === this.#queue.length) {
        this.#queue.length = this.#readers.length = this.#head = 0;
      } else if (this.#head >= 1024 && this.#head * 2 >= this.#queue.length) {
        this.#queue.splice(0, this.#head);
        this.#readers.splice(0, this.#head);
        this.#head = 0;
      }
      this.#hold(reader);
      next();
    } else {
      this.#free++;
    }
  }

  #onTick(): void {
    this.#tick++;
    // Turns held past their time end (and go to the waiters first come first served).
    this.#holding.forEach((r) => {
      if (this.#tick >= r.turnEnds) this.leave(r);
    });
    if (this.#holding.size === 0 && this.waiting === 0 && this.#stop !== null) {
      this.#stop();
      this.#stop = null;
    }
  }
}

/** The one gate of the process: the budget it shares out is the process's. */
export const readGate = new ReadGate();
