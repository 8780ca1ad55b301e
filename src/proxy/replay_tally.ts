// The counts of a `prox replay`: requests, unchanged, changed, the change groups (from -> to)
// with a few sample requests each, and the routes whose decisions were uncertain. Bounded
// whatever the size of the log: at most `maxGroups` groups, `samples` samples per group.

/** A change: the group it falls in and the sample line for this request. */
export interface Change {
  from: string;
  to: string;
  sample: string;
}

/** One change group: from → to, how many requests, and the first few samples. */
export interface ChangeGroup {
  from: string;
  to: string;
  count: number;
  samples: string[];
}

/** The counts and groups of a replay, bounded whatever the size of the log. */
export class ReplayTally {
  requests = 0;
  unchanged = 0;
  changed = 0;
  /** Requests that now get 404 because no route matches (and did not before). */
  notFound = 0;
  /** Changed requests whose group was not kept (past `maxGroups`). */
  otherChanges = 0;
  skipped = 0;
  /** Of the skipped lines, Prox's own log lines (start-up, reloads: stdout holds both). */
  logLines = 0;
  /** Of the skipped lines, access records that cannot be replayed (a host that makes no URL). */
  unreplayable = 0;
  /** Why the first such record could not be replayed (file:line: reason). */
  firstUnreplayable: string | undefined;
  /** The first few skipped lines other than log lines, with why. */
  skippedSamples: string[] = [];
  readonly #groups = new Map<string, ChangeGroup>();
  readonly #uncertain = new Map<string, { route: string; reason: string; requests: number }>();
  readonly #o: { maxGroups: number; samples: number };

  constructor(o: { maxGroups?: number; samples?: number } = {}) {
    this.#o = { maxGroups: o.maxGroups ?? 100, samples: o.samples ?? 3 };
  }

  /** Counts a line that is not a request; `logLine` when it is one of Prox's own log lines. */
  skip(where: string, why: string, logLine = false): void {
    this.skipped++;
    if (logLine) this.logLines++;
    else if (this.skippedSamples.length < 5) this.skippedSamples.push(`${where}: ${why}`);
  }

  /** Counts an access record that could not be replayed (skipped, with why). */
  unreplayed(where: string, why: string): void {
    this.skip(where, why);
    this.unreplayable++;
    this.firstUnreplayable ??= `${where}: ${why}`;
  }

  /** Counts one request: its change (or null) and the doubts of the routes that decided it. */
  add(change: Change | null, o: { notFound: boolean; doubts: [string, string][] }): void {
    this.requests++;
    for (const [route, reason] of o.doubts) {
      const key = `${route}\n${reason}`;
      const u = this.#uncertain.get(key) ?? { route, reason, requests: 0 };
      u.requests++;
      this.#uncertain.set(key, u); // routes × reasons: bounded by the configs
    }
    if (!change) {
      this.unchanged++;
      return;
    }
    this.changed++;
    if (o.notFound) this.notFound++;
    const key = `${change.from}\n${change.to}`;
    let g = this.#groups.get(key);
    if (!g) {
      if (this.#groups.size >= this.#o.maxGroups) {
        this.otherChanges++;
        return;
      }
      g = { from: change.from, to: change.to, count: 0, samples: [] };
      this.#groups.set(key, g);
    }
    g.count++;
    if (g.samples.length < this.#o.samples && !g.samples.includes(change.sample)) {
      g.samples.push(change.sample);
    }
  }

  /** The groups, most requests first (ties in text order, so the report is deterministic). */
  groups(): ChangeGroup[] {
    return [...this.#groups.values()].sort((a, b) =>
      b.count - a.count || (a.from + a.to < b.from + b.to ? -1 : 1)
    );
  }

  uncertain(): { route: string; reason: string; requests: number }[] {
    return [...this.#uncertain.values()].sort((a, b) =>
      b.requests - a.requests || (a.route < b.route ? -1 : a.route > b.route ? 1 : 0)
    );
  }
}
