// The benchmarks' prompts: random token ids over a model's vocabulary, from a seeded generator, so a
// benchmark sends the same prompts on every run.
import { loadModelConfig } from "../worker/engine/model-config.ts";
import type { Prng } from "../worker/engine/prng.ts";

/** Draws prompts of `length` random token ids of the model folder's vocabulary from `prng`. */
export function randomPrompts(modelDir: string, prng: Prng): (length: number) => number[] {
  const vocab = loadModelConfig(modelDir).vocabSize;
  return (length) => Array.from({ length }, () => Math.floor(prng.nextFloat() * vocab));
}
