// The slot table: eviction by use counts with dynamic aging (least recently used among equals) that never
// takes a referenced, pinned or half-written slot, and the pin limits.
import { describe, expect, it } from "vitest";
import { NoFreeSlotError, PinLimitError, SlotTable } from "../../worker/adapters/slots.ts";

/** Claims, writes and releases: the adapter stays resident, unreferenced. */
function load(table: SlotTable, key: string): number {
  const { slot } = table.claim(key);
  table.markReady(key);
  table.unref(key);
  return slot;
}

describe("SlotTable", () => {
  it("fills empty slots lowest first and counts the free ones", () => {
    const table = new SlotTable(3);
    expect(table.free).toBe(3);
    expect(load(table, "a")).toBe(1);
    expect(load(table, "b")).toBe(2);
    expect(table.free).toBe(1);
    expect(table.slotOf("b")).toBe(2);
  });

  it("keeps a much-used adapter through a run of one-off ones, until aging lets it go", () => {
    const table = new SlotTable(2);
    load(table, "hot");
    for (let i = 0; i < 3; i++) {
      table.ref("hot");
      table.unref("hot");
    }
    // LRU would evict "hot" on the second newcomer; its 4 uses keep it through one-off adapters...
    const evicted: (string | undefined)[] = [];
    for (const key of ["x1", "x2", "x3", "x4", "x5"]) {
      evicted.push(table.claim(key).evicted);
      table.markReady(key);
      table.unref(key);
    }
    expect(evicted.slice(0, 4)).toEqual([undefined, "x1", "x2", "x3"]);
    // ...whose priorities rise with the age each eviction sets, until one passes it.
    expect(evicted[4]).toBe("hot");
  });

  it("lets a recently evicted adapter resume its use count when it comes back", () => {
    const table = new SlotTable(2);
    load(table, "a");
    for (let i = 0; i < 5; i++) {
      table.ref("a");
      table.unref("a");
    }
    const oneOffs = (keys: string[]) =>
      keys.map((key) => {
        const { evicted } = table.claim(key);
        table.markReady(key);
        table.unref(key);
        return evicted;
      });
    // Six uses: it takes six one-offs' aging before "a" goes.
    expect(oneOffs(["b1", "b2", "b3", "b4", "b5", "b6", "b7"])).toEqual([
      undefined,
      "b1",
      "b2",
      "b3",
      "b4",
      "b5",
      "a",
    ]);
    // Back with its count (7 uses, not 1): the one-offs beside it go first again.
    expect(oneOffs(["a", "c1", "c2", "c3"])).toEqual(["b6", "b7", "c1", "c2"]);
  });

  it("evicts the least recently used adapter among equally used ones", () => {
    const table = new SlotTable(3);
    for (const key of ["a", "b", "c"]) load(table, key);
    table.ref("a");
    table.unref("a");
    expect(table.claim("d")).toEqual({ slot: 2, evicted: "b" });
    table.markReady("d");
    table.unref("d");
    expect(table.claim("e")).toEqual({ slot: 3, evicted: "c" });
    table.markReady("e");
    table.unref("e");
    expect(table.claim("f")).toEqual({ slot: 1, evicted: "a" });
    expect(table.has("a")).toBe(false);
  });

  it("never evicts a slot that a running sequence references", () => {
    const table = new SlotTable(2);
    load(table, "a");
    load(table, "b");
    table.ref("a");
    expect(table.claim("c")).toEqual({ slot: 2, evicted: "b" });
    expect(() => table.claim("d")).toThrow(NoFreeSlotError);
    table.markReady("c");
    expect(() => table.claim("d")).toThrow(/all 2 slots are in use/);
    table.unref("c");
    expect(table.claim("d")).toEqual({ slot: 2, evicted: "c" });
  });

  it("never evicts a slot whose adapter is still being written", () => {
    const table = new SlotTable(1);
    table.claim("a");
    table.unref("a");
    expect(() => table.claim("b")).toThrow(NoFreeSlotError);
  });

  it("keeps pinned adapters under eviction pressure and refuses the 17th pin", () => {
    const table = new SlotTable(18);
    const pinned = Array.from({ length: 16 }, (_, i) => `pinned-${i}`);
    for (const key of pinned) {
      table.pin(key);
      load(table, key);
    }
    expect(() => table.pin("one-more")).toThrow(PinLimitError);
    expect(() => table.pin("one-more")).toThrow(/16 adapters are pinned, the limit is 16 per base/);
    for (let i = 0; i < 20; i++) load(table, `other-${i}`);
    for (const key of pinned) expect(table.isReady(key)).toBe(true);
    expect(table.keys()).toHaveLength(18);
    table.unpin("pinned-0");
    table.pin("one-more");
    load(table, "other-20");
    load(table, "other-21");
    expect(table.has("pinned-0")).toBe(false);
  });

  it("refuses a pin that would leave no slot for unpinned adapters", () => {
    const table = new SlotTable(3);
    table.pin("a");
    table.pin("b");
    expect(() => table.pin("c")).toThrow(/3 slots and 2 are pinned; one slot must stay unpinned/);
    table.pin("a");
    expect(table.pinnedKeys()).toEqual(["a", "b"]);
  });

  it("frees a dropped slot at once and refuses more releases than references", () => {
    const table = new SlotTable(2);
    load(table, "a");
    table.ref("a");
    expect(table.drop("a")).toBe(1);
    expect(table.free).toBe(2);
    expect(table.drop("a")).toBeUndefined();
    load(table, "b");
    expect(() => table.unref("b")).toThrow(/released more often than acquired/);
  });

  it("lists written adapters most recently used first", () => {
    const table = new SlotTable(3);
    load(table, "a");
    load(table, "b");
    table.claim("c");
    table.ref("a");
    expect(table.readyKeys()).toEqual(["a", "b"]);
  });
});
