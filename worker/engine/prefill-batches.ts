// Which of a step's admitted prompts prefill together. The onnxruntime engine right-pads a batch of prompts
// to its longest, and a padded position costs as much as a real one; one run for several prompts instead
// reads the weights once and multiplies larger matrices (CPU, bench-1b, eight 44-token prompts: ~75 ms
// each together against ~95 ms each alone). So prompts of similar lengths go together, while a prompt much
// longer than the rest runs on its own rather than padding them all to its length.

/** A batch pads at most this share of its positions: padded tokens ≤ (1 − 1/1.25) of the batch. */
const MOST_PADDED = 1.25;

/**
 * Groups prompt indices (by length, longest first) so that each group's padding stays within bounds; all
 * in one group for an engine that runs a batch ragged (`pads` false: the CUDA engine).
 */
export function prefillBatches(lengths: readonly number[], pads = true): number[][] {
  if (!pads) return lengths.length > 0 ? [lengths.map((_, i) => i)] : [];
  const order = lengths.map((_, i) => i).sort((a, b) => lengths[b]! - lengths[a]! || a - b);
  const batches: number[][] = [];
  let batch: number[] = [];
  let longest = 0;
  let tokens = 0;
  for (const i of order) {
    const length = lengths[i]!;
    if (batch.length > 0 && (batch.length + 1) * longest > MOST_PADDED * (tokens + length)) {
      batches.push(batch);
      batch = [];
    }
    if (batch.length === 0) {
      longest = length;
      tokens = 0;
    }
    batch.push(i);
    tokens += length;
  }
  if (batch.length > 0) batches.push(batch);
  return batches;
}
