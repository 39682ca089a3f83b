// The parse thread's ready shared memory (worker/adapters/prefaulted-memory.ts): every buffer is handed out
// once, at the size asked, and once handed out nothing touches it again — an adapter's rows are its own.
import { setImmediate as nextTurn } from "node:timers/promises";
import { describe, expect, it } from "vitest";
import { PrefaultedMemory } from "../../worker/adapters/prefaulted-memory.ts";

const MiB = 1024 * 1024;

async function turns(n: number): Promise<void> {
  for (let i = 0; i < n; i++) await nextTurn();
}

describe("PrefaultedMemory", () => {
  it("hands out buffers of the size asked, never the same one twice", async () => {
    const memory = new PrefaultedMemory();
    const first = memory.take(3 * MiB);
    expect(first.byteLength).toBe(3 * MiB);
    memory.prepare();
    await turns(8);
    const second = memory.take(3 * MiB);
    expect(second.byteLength).toBe(3 * MiB);
    expect(second).not.toBe(first);
    // Nothing was made ready since: a fresh one.
    const third = memory.take(3 * MiB);
    expect(third).not.toBe(second);
    // A ready buffer of another size is not handed out for this one.
    memory.prepare();
    const other = memory.take(MiB);
    expect(other.byteLength).toBe(MiB);
  });

  it("stops touching a buffer once it is taken, half made ready or not", async () => {
    const memory = new PrefaultedMemory();
    memory.take(8 * MiB);
    memory.prepare();
    await turns(1);
    // Taken after one turn of eight: the later turns must leave it alone.
    const taken = new Uint8Array(memory.take(8 * MiB));
    taken.fill(7);
    await turns(16);
    expect(taken.every((b) => b === 7)).toBe(true);
  });
});
