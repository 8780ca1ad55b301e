// Keeps the admin listener in step with the config across reloads: a new address binds first,
// then the old listener drains (not awaited: the reload may have come in through it).

import { parseListenAddr } from "../config/listen.ts";
import type { Logger } from "../ports.ts";
import { REUSE_PORT } from "./listener_set.ts";
import type { AdminCallbacks, AdminListener } from "./admin.ts";

/** The admin side of the server. */
export interface AdminFollower {
  readonly listener: AdminListener | null;
  /**
   * Listens on `addr` (`host:port`), moves there, or stops when null. Rejects on a bad address.
   * The admin code (and Hono) loads with the first admin listener, not with every Prox.
   */
  sync(addr: string | null): Promise<void>;
  /** Drains the current listener and any replaced one still closing. */
  shutdown(): Promise<void>;
}

/** Creates the follower; `token` is read per request, `callbacks` when a listener starts. */
export function followAdmin(o: {
  logger: Logger;
  token: () => string | undefined;
  callbacks: () => AdminCallbacks;
  /** The first listener may share its port with the Prox this one takes over (`--takeover`). */
  takeover?: boolean;
}): AdminFollower {
  let admin: AdminListener | null = null;
  let first = true;
  let at: string | null = null;
  let stopped = false;
  const closing = new Set<Promise<void>>();
  return {
    get listener() {
      return admin;
    },
    async sync(want) {
      const share = first && o.takeover === true;
      first = false;
      if (want === at) return;
      const old = admin;
      if (want) {
        const addr = parseListenAddr(want);
        if (typeof addr === "string") throw new Error(addr);
        const { startAdmin } = await import("./admin.ts");
        if (stopped) return; // shut down while the module loaded
        admin = startAdmin(addr, {
          logger: o.logger,
          token: o.token,
          callbacks: o.callbacks(),
          reusePort: REUSE_PORT,
          mayShare: share,
        });
      } else admin = null;
      at = want;
      if (old) {
        const done = old.shutdown();
        closing.add(done);
        void done.finally(() => closing.delete(done));
      }
    },
    async shutdown() {
      stopped = true;
      await Promise.all([admin?.shutdown(), ...closing]);
    },
  };
}
