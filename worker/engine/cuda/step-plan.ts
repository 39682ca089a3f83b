// Turns prefills and decodes into the native model's ragged steps (native.ts, NativeStep). A step's row
// is one token of one sequence at one position; the native step writes each row's key and value before
// attention, so a prompt may be split anywhere as long as its earlier positions run in an earlier step
// or the same one. Rows keep their order across steps, so the steps' logit rows, concatenated, come out
// in the order the rows were given.
import type { NativeStep } from "./native.ts";

export interface StepRow {
  token: number;
  cacheRow: number;
  position: number;
  slot: number;
  /** Whether this row's next-token logits (or argmax) are wanted. */
  logits: boolean;
}

/**
 * The rows of prompts (or chunks of prompts) prefilled from position `start` on: each one's last token has
 * logits, or all of a prompt's with allLogits.
 */
export function prefillRows(
  prompts: readonly {
    cacheRow: number;
    slot: number;
    start: number;
    tokens: readonly number[];
    allLogits?: boolean;
  }[],
): StepRow[] {
  return prompts.flatMap(({ cacheRow, slot, start, tokens, allLogits }) =>
    tokens.map((token, i) => ({
      token,
      cacheRow,
      position: start + i,
      slot,
      logits: allLogits === true || i === tokens.length - 1,
    })),
  );
}

/** A native step and how many of its logit rows the caller asked for (the first `wanted`, in order). */
export interface PlannedStep {
  native: NativeStep;
  /**
   * The native step names at least one logit row; a chunk without any (a long prompt's first chunks)
   * names its last row, whose result is dropped: wanted is then 0.
   */
  wanted: number;
}

/** Splits rows, in order, into steps of at most `maxStepTokens` rows. */
export function planSteps(
  rows: readonly StepRow[],
  maxStepTokens: number,
  returnLogits: boolean,
): PlannedStep[] {
  if (!Number.isSafeInteger(maxStepTokens) || maxStepTokens < 1) {
    throw new RangeError(`maxStepTokens must be a positive integer, got ${maxStepTokens}`);
  }
  const steps: PlannedStep[] = [];
  for (let start = 0; start < rows.length; start += maxStepTokens) {
    const chunk = rows.slice(start, start + maxStepTokens);
    const logitRows: number[] = [];
    chunk.forEach((row, i) => {
      if (row.logits) logitRows.push(i);
    });
    const wanted = logitRows.length;
    if (wanted === 0) logitRows.push(chunk.length - 1);
    steps.push({
      native: {
        tokens: Int32Array.from(chunk, (r) => r.token),
        cacheRows: Int32Array.from(chunk, (r) => r.cacheRow),
        positions: Int32Array.from(chunk, (r) => r.position),
        slots: Int32Array.from(chunk, (r) => r.slot),
        logitRows: Int32Array.from(logitRows),
        returnLogits,
      },
      wanted,
    });
  }
  return steps;
}
