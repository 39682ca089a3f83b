// The misuse a prompt sent in chunks invites, refused by every engine the same way.
import { expect } from "vitest";
import type { ChunkedPrefillCase } from "../../scripts/chunked-prefill-trace.ts";
import type { ServingEngine } from "../../worker/engine/create-engine.ts";

/** The misuse a chunked prompt invites, refused: decoding it early, or continuing it with another adapter. */
export async function expectChunkMisuseRefused(engine: ServingEngine, c: ChunkedPrefillCase): Promise<void> {
  const [longSlot, aSlot] = c.slots;
  await engine.prefill("a", c.short[0], aSlot);
  await engine.prefillTogether([
    { id: "long", tokens: c.long.slice(0, c.cuts[0]), slot: longSlot, more: true },
  ]);
  await expect(
    engine.decode(
      new Map([
        ["a", 1],
        ["long", 1],
      ]),
    ),
  ).rejects.toThrow("sequence long is still prefilling its prompt");
  await expect(
    engine.prefillTogether([{ id: "long", tokens: c.long.slice(c.cuts[0]), slot: aSlot }]),
  ).rejects.toThrow(`sequence long is prefilling in slot ${longSlot}, not ${aSlot}`);
  await expect(engine.prefillTogether([{ id: "a", tokens: [1], slot: aSlot }])).rejects.toThrow(
    "sequence a is already running",
  );
  // Without it, the rest decodes; released mid-prompt, it leaves nothing behind.
  expect((await engine.decode(new Map([["a", 1]]))).size).toBe(1);
  engine.release("long");
  engine.release("a");
  expect(engine.running).toBe(0);
}
