// Cross-field rules of a route's `mirror`: its URLs get the target checks in validate_route.ts;
// here, what would copy twice to one place, never end, or hold more memory than meant.

import type { LoadBalanceRouteConfig, MirrorConfig, ProxyRouteConfig } from "./schema.ts";
import type { Report } from "./validate_route.ts";

/** The mirror's URLs with their config path below `mirror`. */
export function mirrorUrls(target: MirrorConfig["target"]): [(string | number)[], string][] {
  return typeof target === "string"
    ? [[["target"], target]]
    : target.map((u, i) => [["target", i], u]);
}

/** Memory mirrored bodies may hold per route past which validate warns. */
const BODY_MEMORY_WARN = 256 * 1024 * 1024;

/** Checks one route's `mirror` (reported under `at`). */
export function validateMirror(
  route: ProxyRouteConfig | LoadBalanceRouteConfig,
  o: { err: Report; warn: Report; at: (string | number)[] },
): void {
  const m = route.mirror!;
  const { err, warn, at } = o;
  const origins = new Set(
    (route.type === "proxy"
      ? [route.target]
      : route.targets.map((t) => typeof t === "string" ? t : t.url))
      .map(originOf),
  );
  const seen = new Set<string>();
  for (const [path, u] of mirrorUrls(m.target)) {
    if (seen.has(u)) {
      err([...at, ...path], `Duplicate mirror target "${u}"`, "List each mirror target once");
    }
    seen.add(u);
    if (origins.has(originOf(u))) {
      warn(
        [...at, ...path],
        `Mirror target "${u}" is also a target of this route: it gets the mirrored requests twice`,
        "Mirror to a separate (shadow) deployment",
      );
    }
  }
  if (m.timeout === 0) {
    err(
      [...at, "timeout"],
      "A mirror's timeout cannot be 0: a shadow that never answers would hold its copies forever",
      "Set a duration, e.g. timeout: 5s",
    );
  }
  if (m.body && m.max_body * m.max_in_flight > BODY_MEMORY_WARN) {
    const mib = Math.round(m.max_body * m.max_in_flight / 1048576);
    warn(
      [...at, "max_body"],
      `Mirrored bodies may hold up to ${mib} MiB of memory on this route (max_body × max_in_flight)`,
      "Lower max_body or max_in_flight, or set body: false",
    );
  }
}

function originOf(u: string): string {
  try {
    return new URL(u).origin;
  } catch {
    return u;
  }
}
