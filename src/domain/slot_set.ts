// A set of objects that each carry their own position in it (`slot`), for sets that gain and lose
// members on every request and live as long as the process. A `Set` there reallocates its hash
// table every few additions and deletions; the new table, held by a set that is old, outlives the
// next scavenge and is promoted, to die in the old generation (measured at 1,000 connections with
// the sampling heap profiler: about 150 of the 500 bytes promoted per request came from three such
// sets). An array and swap-removal allocate nothing once the array has grown.

/** A member: `slot` is its index in the one SlotSet it can belong to, -1 while outside. */
export interface Slotted {
  slot: number;
}

export class SlotSet<T extends Slotted> {
  #items: T[] = [];

  get size(): number {
    return this.#items.length;
  }

  has(x: T): boolean {
    return x.slot >= 0;
  }

  add(x: T): void {
    if (x.slot >= 0) return;
    x.slot = this.#items.length;
    this.#items.push(x);
  }

  delete(x: T): boolean {
    const i = x.slot;
    if (i < 0) return false;
    const last = this.#items.pop()!;
    if (last !== x) {
      this.#items[i] = last;
      last.slot = i;
    }
    x.slot = -1;
    return true;
  }

  /**
   * Calls `f` for each member, last added first. `f` may delete members and add new ones: a new
   * member is not visited in this pass, and a member that another's deletion moved may be visited
   * twice.
   */
  forEach(f: (x: T) => void): void {
    const items = this.#items;
    for (let i = items.length - 1; i >= 0; i--) {
      if (i < items.length) f(items[i]);
    }
  }
}
