// One scenario for every engine (the unit tests, and scripts/cuda-check.ts on the GPU): a long prompt
// prefilled in three chunks while other sequences decode around it, or whole in one run, must give the
// same logits — its own for every prompt token, the others' at every decode, and everyone's after it
// joined the batch.
import type { ServingEngine } from "../worker/engine/create-engine.ts";

export interface ChunkedPrefillCase {
  /** The long prompt, cut into chunks at these token offsets. */
  long: number[];
  cuts: [number, number];
  /** Three short prompts: one running before, one joining with the first chunk, one with the last. */
  short: [number[], number[], number[]];
  /** Slots for long, then the three short ones. */
  slots: [number, number, number, number];
}

/** Logit rows by label: "long" (every prompt token), "a" / "b" / "c" prefills, "step<i>.<id>" decodes. */
export type Trace = Map<string, Float32Array[]>;

export async function chunkedPrefillTrace(
  engine: ServingEngine,
  c: ChunkedPrefillCase,
  chunked: boolean,
): Promise<Trace> {
  const trace: Trace = new Map();
  const [longSlot, aSlot, bSlot, cSlot] = c.slots;
  const keep = (label: string, rows: Float32Array[]) =>
    trace.set(
      label,
      rows.map((r) => r.slice()),
    );
  let step = 0;
  const decode = async (ids: string[]) => {
    const rows = await engine.decode(new Map(ids.map((id, i) => [id, 5 + 3 * i + step])));
    for (const id of ids) keep(`step${step}.${id}`, [rows.get(id)!]);
    step++;
  };
  const [cut1, cut2] = c.cuts;
  keep("a", await engine.prefill("a", c.short[0], aSlot, true));
  const longRows: Float32Array[] = [];
  if (chunked) {
    // The first chunk batched with a new whole prompt; the middle one alone.
    const first = await engine.prefillTogether([
      { id: "long", tokens: c.long.slice(0, cut1), slot: longSlot, more: true, allLogits: true },
      { id: "b", tokens: c.short[1], slot: bSlot, allLogits: true },
    ]);
    longRows.push(...first.slice(0, cut1));
    keep("b", first.slice(cut1));
    await decode(["a", "b"]);
    longRows.push(
      ...(await engine.prefillTogether([
        { id: "long", tokens: c.long.slice(cut1, cut2), slot: longSlot, more: true, allLogits: true },
      ])),
    );
    await decode(["a", "b"]);
  } else {
    keep("b", await engine.prefill("b", c.short[1], bSlot, true));
    await decode(["a", "b"]);
    await decode(["a", "b"]);
  }
  // The long prompt's last chunk (or all of it) together with a new prompt; then all four decode.
  const rest = chunked ? c.long.slice(cut2) : c.long;
  const last = await engine.prefillTogether([
    { id: "long", tokens: rest, slot: longSlot, allLogits: true },
    { id: "c", tokens: c.short[2], slot: cSlot, allLogits: true },
  ]);
  longRows.push(...last.slice(0, rest.length));
  keep("long", longRows);
  keep("c", last.slice(rest.length));
  await decode(["a", "b", "long", "c"]);
  await decode(["a", "b", "long", "c"]);
  for (const id of ["a", "b", "long", "c"]) engine.release(id);
  return trace;
}

/** The scenario on a model of this vocabulary: a 23-token prompt cut at 9 and 16, three adapters and the base. */
export function chunkedPrefillCase(vocabSize: number): ChunkedPrefillCase {
  const tokens = (n: number, seed: number) =>
    Array.from({ length: n }, (_, t) => (seed + 31 * t + 1) % vocabSize);
  return {
    long: Array.from({ length: 23 }, (_, t) => (13 * t + 7) % vocabSize),
    cuts: [9, 16],
    short: [tokens(4, 17), tokens(7, 68), tokens(5, 34)],
    slots: [2, 1, 3, 0],
  };
}
