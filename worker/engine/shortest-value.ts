// The fewest bytes a value of a schema node can be written in, compact: what a structured output still
// needs to close (JsonGrammar.fewestBytesToEnd) so that a sequence near its max_tokens is steered to end its
// value rather than be cut off in it (json-mode.ts). Recursive schemas ($ref) make the nodes a graph: the
// costs are relaxed over it until they settle, Infinity where no finite value exists.
import type { PropertyNode, SchemaNode } from "./json-schema.ts";
import { fewestCharsToEnd } from "./number-range.ts";

type ObjectNode = Extract<SchemaNode, { kind: "object" }>;

/** Each node's cost, filled for the whole graph reachable from the first node asked about. */
const costs = new WeakMap<SchemaNode, number>();

/** Per object node, the cost of its required properties from each index on (requiredFrom). */
const tails = new WeakMap<ObjectNode, { bytes: number[]; count: number[] }>();

/** The fewest bytes of a value of `node`. */
export function shortestValue(node: SchemaNode): number {
  const known = costs.get(node);
  if (known !== undefined) return known;
  const nodes = reachable(node);
  const current = new Map<SchemaNode, number>(
    nodes.map((n) => [n, costs.get(n) ?? Number.POSITIVE_INFINITY]),
  );
  const cost = (n: SchemaNode) => current.get(n) ?? costs.get(n)!;
  // Costs only fall, each round by way of one more node: as many rounds as nodes settle them.
  for (let round = 0; round <= nodes.length; round++) {
    let changed = false;
    for (const n of nodes) {
      const value = ownCost(n, cost);
      if (value < current.get(n)!) {
        current.set(n, value);
        changed = true;
      }
    }
    if (!changed) break;
  }
  for (const [n, value] of current) costs.set(n, value);
  return current.get(node)!;
}

/**
 * The required properties of an object from index `from` on: how many, and the bytes of their `"key":value`
 * pairs (no commas).
 */
export function requiredFrom(node: ObjectNode, from: number): { count: number; bytes: number } {
  let tail = tails.get(node);
  if (!tail) {
    const properties = node.properties ?? [];
    const bytes = new Array<number>(properties.length + 1).fill(0);
    const count = new Array<number>(properties.length + 1).fill(0);
    for (let i = properties.length - 1; i >= 0; i--) {
      const p = properties[i]!;
      bytes[i] = bytes[i + 1]! + (p.required ? pairBytes(p) : 0);
      count[i] = count[i + 1]! + (p.required ? 1 : 0);
    }
    tail = { bytes, count };
    tails.set(node, tail);
  }
  const at = Math.min(from, tail.bytes.length - 1);
  return { count: tail.count[at]!, bytes: tail.bytes[at]! };
}

/** `"key":value` at its shortest. */
export function pairBytes(property: PropertyNode): number {
  return property.key.length + 1 + shortestValue(property.value);
}

/** A value of `n` given the costs of the nodes it holds. */
function ownCost(n: SchemaNode, cost: (n: SchemaNode) => number): number {
  switch (n.kind) {
    case "any":
      return 1; // 0
    case "object": {
      let bytes = 0;
      let count = 0;
      for (const p of n.properties ?? []) {
        if (!p.required) continue;
        bytes += p.key.length + 1 + cost(p.value);
        count++;
      }
      return 2 + bytes + Math.max(0, count - 1);
    }
    case "array":
      // `[]` needs no item, even one that cannot be written (0 · Infinity would be NaN).
      return n.minItems === 0 ? 2 : 2 + n.minItems * cost(n.items) + n.minItems - 1;
    case "string": {
      const chars = n.pattern ? Math.max(n.minLength, n.pattern.minRemaining[0]!) : n.minLength;
      return 2 + chars;
    }
    case "number":
      return n.range ? fewestCharsToEnd(n.range, "") : 1;
    case "literals":
      return Math.min(...n.values.map((v) => v.length));
    case "union":
      return Math.min(...n.options.map(cost));
  }
}

/** Every node reachable from `root` whose cost is not known yet, root first. */
function reachable(root: SchemaNode): SchemaNode[] {
  const seen = new Set<SchemaNode>();
  const stack = [root];
  while (stack.length > 0) {
    const n = stack.pop()!;
    if (seen.has(n) || costs.has(n)) continue;
    seen.add(n);
    if (n.kind === "object") for (const p of n.properties ?? []) stack.push(p.value);
    else if (n.kind === "array") stack.push(n.items);
    else if (n.kind === "union") stack.push(...n.options);
  }
  return [...seen];
}
