// Where a key path of the parsed config sits in the YAML source, following aliases (`*name`) and
// merge keys (`<<: *name`) to the text the value came from, so an issue inside shared settings
// points at the lines that hold them.

import { isAlias, isMap, isScalar, isSeq } from "yaml";
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
