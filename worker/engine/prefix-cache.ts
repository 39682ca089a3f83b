// Prompt prefixes whose KV cache the engine keeps, so a prompt that starts like an earlier one (the same
// system prompt and chat template, on the same adapter) prefills only what differs. Prefixes are whole
// blocks of PREFIX_BLOCK tokens, keyed by a scope (the engine's: tenant and adapter) and the tokens of
// every block boundary: a new prompt reuses the longest stored prefix it shares within its scope, at most
// all but its last token (whose logits the prefill must compute). Entries are evicted least recently used
// first, within a byte budget. What an entry holds (a cache of the prefix's positions) is the engine's;
// this index only keeps track of it.

/** Tokens per block: prefixes are reused in multiples of this. */
export const PREFIX_BLOCK = 16;

interface Entry<T> {
  tokens: readonly number[];
  value: T;
  bytes: number;
  /** The boundary keys this entry answers for in the index. */
  keys: string[];
}

/** What a prefix cache holds, and the prompt tokens it has spared since it was made. */
export interface PrefixCacheStats {
  entries: number;
  bytes: number;
  reusedTokens: number;
}

export interface PrefixHit<T> {
  value: T;
  /** Prompt tokens the stored cache covers: a multiple of PREFIX_BLOCK. */
  length: number;
}

export class PrefixCache<T> {
  /** Entries in use order, least recent first (a Map keeps insertion order). */
  private readonly entries = new Map<Entry<T>, true>();
  /** Key of (scope, first k tokens) at each block boundary k → the newest entry holding that prefix. */
  private readonly index = new Map<string, Entry<T>>();
  private used = 0;
  private reusedTokens = 0;

  constructor(
    private budgetBytes: number,
    private readonly dispose: (value: T) => void,
  ) {}

  /** Sets the byte budget, evicting least recently used entries until they fit it. */
  limit(budgetBytes: number): void {
    this.budgetBytes = budgetBytes;
    for (const entry of [...this.entries.keys()]) {
      if (this.used <= budgetBytes) break;
      this.evict(entry);
    }
  }

  /** The longest stored prefix of `tokens` in `scope` that leaves at least one token to compute. */
  lookup(scope: string, tokens: readonly number[]): PrefixHit<T> | null {
    const keys = boundaryKeys(scope, tokens, tokens.length - 1);
    for (let i = keys.length - 1; i >= 0; i--) {
      const entry = this.index.get(keys[i]!);
      const length = (i + 1) * PREFIX_BLOCK;
      if (!entry || !samePrefix(entry.tokens, tokens, length)) continue;
      this.entries.delete(entry);
      this.entries.set(entry, true);
      return { value: entry.value, length };
    }
    return null;
  }

  /**
   * The whole blocks of `tokens` a new entry should hold, or 0 when stored prefixes cover them already or
   * they would not fit the budget: the caller then need not copy anything.
   */
  worthStoring(scope: string, tokens: readonly number[], bytesPerToken: number): number {
    const length = Math.floor(tokens.length / PREFIX_BLOCK) * PREFIX_BLOCK;
    if (length === 0 || length * bytesPerToken > this.budgetBytes) return 0;
    const key = boundaryKeys(scope, tokens, length).at(-1)!;
    const known = this.index.get(key);
    return known && samePrefix(known.tokens, tokens, length) ? 0 : length;
  }

  /** Stores `value`, a cache of exactly `tokens` (whole blocks, see worthStoring), evicting as needed. */
  store(scope: string, tokens: readonly number[], value: T, bytes: number): void {
    const entry: Entry<T> = {
      tokens: tokens.slice(),
      value,
      bytes,
      keys: boundaryKeys(scope, tokens, tokens.length),
    };
    this.used += bytes;
    this.entries.set(entry, true);
    for (const key of entry.keys) this.index.set(key, entry);
    for (const old of this.entries.keys()) {
      if (this.used <= this.budgetBytes) break;
      if (old !== entry) this.evict(old);
    }
  }

  /** A prefill took `tokens` tokens from a stored prefix instead of computing them. */
  countReuse(tokens: number): void {
    this.reusedTokens += tokens;
  }

  stats(): PrefixCacheStats {
    return { entries: this.entries.size, bytes: this.used, reusedTokens: this.reusedTokens };
  }

  /** Evicts every entry. */
  clear(): void {
    for (const entry of [...this.entries.keys()]) this.evict(entry);
  }

  private evict(entry: Entry<T>): void {
    this.entries.delete(entry);
    this.used -= entry.bytes;
    for (const key of entry.keys) if (this.index.get(key) === entry) this.index.delete(key);
    this.dispose(entry.value);
  }
}

/** Keys of the block boundaries within the first `limit` tokens: one per PREFIX_BLOCK tokens, in order. */
function boundaryKeys(scope: string, tokens: readonly number[], limit: number): string[] {
  const keys: string[] = [];
  // Two 32-bit FNV-1a lanes over the tokens so far; a lookup compares the tokens, so a collision costs
  // only a miss.
  let low = 0x811c9dc5;
  let high = 0x050c5d1f;
  for (let end = PREFIX_BLOCK; end <= limit; end += PREFIX_BLOCK) {
    for (let t = end - PREFIX_BLOCK; t < end; t++) {
      low = Math.imul(low ^ tokens[t]!, 0x01000193) >>> 0;
      high = Math.imul(high ^ (tokens[t]! >>> 16) ^ (tokens[t]! << 5), 0x01000193) >>> 0;
    }
    keys.push(`${scope}:${end}:${low.toString(36)}.${high.toString(36)}`);
  }
  return keys;
}

function samePrefix(a: readonly number[], b: readonly number[], length: number): boolean {
  if (a.length < length || b.length < length) return false;
  for (let i = 0; i < length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * Where an engine files a prompt's prefixes: the prompt's scope (PrefillPrompt.prefixScope, the tenant) and
 * the adapter in its slot, so neither another tenant's prompts nor another adapter's ever match.
 */
export class PrefixScopes {
  /** The adapter written in each slot, by name and sha256. */
  private readonly adapters = new Map<number, string>();

  /** A slot is being written: until written(), prompts in it neither reuse nor store prefixes. */
  writing(slot: number): void {
    this.adapters.delete(slot);
  }

  written(slot: number, adapter: { name: string; sha256: string }): void {
    this.adapters.set(slot, `${adapter.name}@${adapter.sha256}`);
  }

  /** The longest stored prefix of the prompt in `cache` within the prompt's scope; null without one. */
  lookup<T>(
    cache: PrefixCache<T> | null,
    prompt: { tokens: readonly number[]; slot: number; prefixScope?: string },
  ): PrefixHit<T> | null {
    const scope = this.of(prompt);
    return scope === undefined || !cache ? null : cache.lookup(scope, prompt.tokens);
  }

  /** The prompt's prefix-cache scope; undefined while its slot is being written or is empty. */
  of(prompt: { slot: number; prefixScope?: string }): string | undefined {
    const adapter = prompt.slot === 0 ? "" : this.adapters.get(prompt.slot);
    return adapter === undefined ? undefined : JSON.stringify([prompt.prefixScope ?? "", adapter]);
  }
}
