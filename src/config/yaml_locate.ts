// Where a key path of the parsed config sits in the YAML source, following aliases (`*name`) and
// merge keys (`<<: *name`) to the text the value came from, so an issue inside shared settings
// points at the lines that hold them.

import { Alias, isAlias, isMap, isScalar, isSeq, visit } from "yaml";
import type { Document, Node, Pair } from "yaml";

interface Step {
  pair?: Pair;
  node?: unknown;
}

/** A mapping key written as `<<` (parsed with `merge: true`, its value is a symbol). */
export function isMergePair(p: Pair): boolean {
  return isScalar(p.key) && typeof p.key.value === "symbol";
}

/** One step down: a mapping entry (itself or merged in) or a list item. */
function step(doc: Document, node: unknown, key: string | number, depth = 0): Step {
  if (isAlias(node)) node = node.resolve(doc);
  if (isMap(node)) {
    const direct = node.items.find((p) =>
      isScalar(p.key) && !isMergePair(p) && String(p.key.value) === String(key)
    );
    if (direct) return { pair: direct, node: direct.value };
    if (depth > 20) return {};
    // Merge sources in order: the first one holding the key is the one whose value counts.
    for (const p of node.items.filter(isMergePair)) {
      const sources = isSeq(p.value) ? p.value.items : [p.value];
      for (const s of sources) {
        const found = step(doc, s, key, depth + 1);
        if (found.pair || found.node) return found;
      }
    }
    return {};
  }
  if (isSeq(node) && typeof key === "number") return { node: node.items[key] };
  return {};
}

/** The steps from the document's root along `path` (shorter when the path leaves the source). */
function walk(doc: Document, path: (string | number)[]): Step[] {
  const steps: Step[] = [];
  let node: unknown = doc.contents;
  for (const key of path) {
    const s = step(doc, node, key);
    if (!s.pair && !s.node) break;
    steps.push(s);
    node = s.node;
  }
  return steps;
}

function startOf(s: Step | undefined): number | undefined {
  if (s?.pair && isScalar(s.pair.key) && s.pair.key.range) return s.pair.key.range[0];
  const n = s?.node as Node | undefined;
  return n && typeof n === "object" && "range" in n && n.range ? n.range[0] : undefined;
}

/** Offset of the node at `path` (its key when it is a mapping entry), else of its closest parent. */
export function offsetOf(doc: Document, path: (string | number)[]): number {
  const steps = walk(doc, path);
  for (let n = steps.length - 1; n >= 0; n--) {
    const at = startOf(steps[n]);
    if (at !== undefined) return at;
  }
  return 0;
}

/** The mapping entry at `path` as written (not merged in), when there is one. */
export function pairAt(doc: Document, path: (string | number)[]): Pair | undefined {
  const steps = walk(doc, path);
  return steps.length === path.length ? steps.at(-1)?.pair : undefined;
}

/** Whether the source holds `path` (a mapping entry, merged in or not, or a list item). */
export function hasPath(doc: Document, path: (string | number)[]): boolean {
  return walk(doc, path).length === path.length;
}

/** The value node at `path` (through aliases and merge keys), when the source holds it. */
export function nodeAt(doc: Document, path: (string | number)[]): unknown {
  const steps = walk(doc, path);
  if (steps.length !== path.length) return undefined;
  const node = steps.at(-1)?.node;
  return isAlias(node) ? node.resolve(doc) : node;
}

type ResolveContext = { aliasResolveCache?: unknown[] };

/**
 * Makes each alias of `doc` resolve in constant time. The library finds an alias's anchor by
 * walking the document from its start (or, while converting to JavaScript, the list of every
 * alias and anchor): quadratic, so 10,000 aliases took 13 s and a few hundred KB of them hours.
 * One walk in document order finds them all; each alias is given its own `resolve`, which the
 * library's conversion calls too (merge keys, alias counting) with the one anchor to look at.
 */
export function resolveAliasesOnce(doc: Document): void {
  const latest = new Map<string, Node>();
  visit(doc, {
    Node(_, node) {
      if (isAlias(node)) {
        const target = latest.get(node.source);
        const alias = node;
        const resolve = Alias.prototype.resolve;
        alias.resolve = (d: Document, ctx?: ResolveContext) => {
          if (!ctx) return target as ReturnType<Alias["resolve"]>;
          // The library's own check (and alias count) against a list of just this anchor.
          const saved = ctx.aliasResolveCache;
          ctx.aliasResolveCache = target === undefined ? [alias] : [target, alias];
          try {
            return resolve.call(alias, d, ctx as Parameters<Alias["resolve"]>[1]);
          } finally {
            ctx.aliasResolveCache = saved;
          }
        };
      } else if (node.anchor) {
        latest.set(node.anchor, node);
      }
    },
  });
}
