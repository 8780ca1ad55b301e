// What a reload changed, in words: routes added, removed or changed (which keys, which targets),
// and top-level settings changed. Logged with "Config reloaded" and kept in the reload history.

import type { Config, RouteConfig } from "./schema.ts";

/** At most this many lines; the rest is summed up in one more. */
const MAX_LINES = 40;

const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

/** The target URLs of a route (none for static and redirect routes). */
function targetsOf(r: RouteConfig): string[] {
  switch (r.type) {
    case "proxy":
    case "websocket":
      return [r.target];
    case "load_balance":
      return r.targets.map((t) => typeof t === "string" ? t : t.url);
    case "static":
    case "redirect":
    case "respond":
      return [];
  }
}

/** How route `id` changed from `a` to `b` (both present and different). */
function routeChange(id: string, a: RouteConfig, b: RouteConfig): string {
  const name = JSON.stringify(id);
  if (a.type !== b.type) return `route ${name}: type ${a.type} → ${b.type}`;
  const parts: string[] = [];
  // A redirect's target is where clients are sent: said the same way as an upstream's.
  const before = a.type === "redirect" ? [a.target] : targetsOf(a);
  const after = b.type === "redirect" ? [b.target] : targetsOf(b);
  const added = after.filter((t) => !before.includes(t));
  const removed = before.filter((t) => !after.includes(t));
  if (added.length === 1 && removed.length === 1 && before.length === 1) {
    parts.push(`target ${removed[0]} → ${added[0]}`);
  } else {
    if (added.length) parts.push(`targets added: ${added.join(", ")}`);
    if (removed.length) parts.push(`targets removed: ${removed.join(", ")}`);
  }
  const ra = a as Record<string, unknown>;
  const rb = b as Record<string, unknown>;
  const keys = [...new Set([...Object.keys(ra), ...Object.keys(rb)])]
    .filter((k) => k !== "target" && k !== "targets" && !same(ra[k], rb[k]));
  // A load_balance route whose URLs stayed but whose weights or backups moved.
  if (
    (ra.targets !== undefined || rb.targets !== undefined) && !same(ra.targets, rb.targets) &&
    added.length === 0 && removed.length === 0
  ) keys.unshift("targets");
  if (keys.length) parts.push(`changed ${keys.join(", ")}`);
  return `route ${name}: ${parts.join("; ")}`;
}

/**
 * The differences between two configs, one line each, routes first in the new file's order;
 * empty when nothing changed.
 */
export function configChanges(prev: Config, next: Config): string[] {
  const steps = configChangeSteps(prev, next);
  for (;;) {
    const step = steps.next();
    if (step.done) return step.value;
  }
}

/**
 * configChanges one route at a time: it yields after each route, so a reload of thousands of
 * routes can let the event loop answer requests between them.
 */
export function* configChangeSteps(prev: Config, next: Config): Generator<void, string[]> {
  const lines: string[] = [];
  for (const [id, r] of Object.entries(next.routes)) {
    yield;
    const old = prev.routes[id];
    if (old === undefined) {
      const to = targetsOf(r);
      lines.push(
        `route ${JSON.stringify(id)} added (${r.type}${to.length ? ` → ${to.join(", ")}` : ""})`,
      );
    } else if (!same(old, r)) lines.push(routeChange(id, old, r));
  }
  for (const id of Object.keys(prev.routes)) {
    if (!(id in next.routes)) lines.push(`route ${JSON.stringify(id)} removed`);
  }
  const p = prev as Record<string, unknown>;
  const n = next as Record<string, unknown>;
  for (const key of new Set([...Object.keys(p), ...Object.keys(n)])) {
    if (key !== "routes" && !same(p[key], n[key])) lines.push(`${key} changed`);
  }
  if (lines.length <= MAX_LINES) return lines;
  return [...lines.slice(0, MAX_LINES), `and ${lines.length - MAX_LINES} more changes`];
}
