// The prefix cache's index: longest whole-block prefix per adapter, never a prompt's last token, least
// recently used entries evicted within the byte budget.
import { describe, expect, it } from "vitest";
import { PREFIX_BLOCK, PrefixCache } from "../../worker/engine/prefix-cache.ts";

const tokens = (n: number, seed = 0) => Array.from({ length: n }, (_, i) => seed + i);

describe("prefix cache", () => {
  it("finds the longest stored whole-block prefix under the same adapter, leaving the last token to compute", () => {
    const cache = new PrefixCache<string>(1_000_000, () => {});
    const prompt = tokens(3 * PREFIX_BLOCK + 5);
    expect(cache.worthStoring("a", prompt, 1)).toBe(3 * PREFIX_BLOCK);
    cache.store("a", prompt.slice(0, 3 * PREFIX_BLOCK), "a-48", 48);
    expect(cache.worthStoring("a", prompt, 1)).toBe(0); // covered already
    expect(cache.lookup("a", prompt)).toEqual({ value: "a-48", length: 3 * PREFIX_BLOCK });
    // A prompt of exactly the stored tokens reuses all but its last block.
    expect(cache.lookup("a", prompt.slice(0, 3 * PREFIX_BLOCK))?.length).toBe(2 * PREFIX_BLOCK);
    // Diverging in the second block: only the first.
    const diverged = [...prompt.slice(0, PREFIX_BLOCK + 3), 999, ...prompt.slice(PREFIX_BLOCK + 4)];
    expect(cache.lookup("a", diverged)?.length).toBe(PREFIX_BLOCK);
    expect(cache.lookup("b", prompt)).toBeNull();
    expect(cache.lookup("a", tokens(PREFIX_BLOCK))).toBeNull(); // nothing left to compute after a whole block
    expect(cache.lookup("a", tokens(40, 1))).toBeNull();
    expect(cache.worthStoring("a", tokens(PREFIX_BLOCK - 1), 1)).toBe(0);
  });

  it("evicts the least recently used entries to stay within its budget, disposing them", () => {
    const disposed: string[] = [];
    const cache = new PrefixCache<string>(3 * PREFIX_BLOCK, (v) => disposed.push(v));
    const one = tokens(PREFIX_BLOCK, 100);
    const two = tokens(PREFIX_BLOCK, 200);
    const three = tokens(2 * PREFIX_BLOCK, 300);
    cache.store("a", one, "one", PREFIX_BLOCK);
    cache.store("a", two, "two", PREFIX_BLOCK);
    expect(cache.lookup("a", [...one, 7])?.value).toBe("one"); // "one" is now the most recent
    cache.store("a", three, "three", 2 * PREFIX_BLOCK);
    expect(disposed).toEqual(["two"]);
    expect(cache.stats()).toEqual({ entries: 2, bytes: 3 * PREFIX_BLOCK, reusedTokens: 0 });
    expect(cache.lookup("a", [...two, 7])).toBeNull();
    // More than the whole budget is never worth storing.
    expect(cache.worthStoring("a", tokens(4 * PREFIX_BLOCK, 400), 1)).toBe(0);
    cache.clear();
    expect(disposed.sort()).toEqual(["one", "three", "two"]);
    expect(cache.stats()).toEqual({ entries: 0, bytes: 0, reusedTokens: 0 });
    expect(cache.lookup("a", [...one, 7])).toBeNull();
  });

  it("hands a newer entry the boundaries it shares with an older one, and keeps the older one's own", () => {
    const cache = new PrefixCache<string>(1_000_000, () => {});
    const shared = tokens(PREFIX_BLOCK, 10);
    const first = [...shared, ...tokens(PREFIX_BLOCK, 50)];
    const second = [...shared, ...tokens(PREFIX_BLOCK, 90)];
    cache.store("a", first, "first", 32);
    cache.store("a", second, "second", 32);
    expect(cache.lookup("a", [...first, 1])?.value).toBe("first");
    expect(cache.lookup("a", [...second, 1])?.value).toBe("second");
    expect(cache.lookup("a", [...shared, 1])).toEqual({ value: "second", length: PREFIX_BLOCK });
  });
});
