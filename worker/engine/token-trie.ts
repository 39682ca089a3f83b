// A tokenizer's vocabulary as the structured-output masks read it (json-mode.ts, regex-mode.ts,
// grammar-mode.ts): each
// token's bytes, and all of them as a trie, so tokens that share their first bytes are tried on them once
// and a refused prefix leaves every token under it untried. Built once per tokenizer.
import type { Tokenizer } from "./tokenizer.ts";

export interface TrieNode {
  children: Map<number, TrieNode>;
  /** The ids whose bytes end here. */
  tokens: number[];
}

export interface TokenTrie {
  /** Each id's bytes; empty for special tokens, which are never text (stop tokens among them). */
  bytes: Uint8Array[];
  /** Every token with bytes, by its bytes; special tokens are not in it. */
  root: TrieNode;
  /** The most bytes of any token. */
  longest: number;
}

const tries = new WeakMap<Tokenizer, TokenTrie>();

/** The trie of the tokenizer's first `size` ids (the model's vocabulary may be larger than the tokenizer's). */
export function tokenTrie(tokenizer: Tokenizer, size: number): TokenTrie {
  const known = tries.get(tokenizer);
  if (known && known.bytes.length >= size) return known;
  const bytes = Array.from({ length: size }, (_, id) =>
    tokenizer.isSpecial(id) ? new Uint8Array(0) : tokenizer.tokenBytes(id),
  );
  const root: TrieNode = { children: new Map(), tokens: [] };
  for (const [id, token] of bytes.entries()) {
    let node = root;
    for (const b of token) {
      let child = node.children.get(b);
      if (!child) {
        child = { children: new Map(), tokens: [] };
        node.children.set(b, child);
      }
      node = child;
    }
    if (node !== root) node.tokens.push(id);
  }
  const longest = bytes.reduce((most, b) => Math.max(most, b.length), 0);
  const trie = { bytes, root, longest };
  tries.set(tokenizer, trie);
  return trie;
}

/**
 * Per id below `size`, `cost` of where its bytes lead from `from`, or -1 where `step` refuses one of them:
 * the trie walked once, each shared prefix stepped once and a refused one leaving every token under it.
 */
export function tokenCosts<C>(
  root: TrieNode,
  size: number,
  from: C,
  step: (at: C, b: number) => C | null,
  cost: (after: C) => number,
): Int32Array {
  const costs = new Int32Array(size).fill(-1);
  const visit = (node: TrieNode, at: C) => {
    for (const [b, child] of node.children) {
      const after = step(at, b);
      if (!after) continue;
      const value = cost(after);
      for (const id of child.tokens) if (id < size) costs[id] = value;
      visit(child, after);
    }
  };
  visit(root, from);
  return costs;
}
