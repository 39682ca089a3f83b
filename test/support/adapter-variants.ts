// A set of PEFT adapters, one per variant (ranks, alphas, rsLoRA, partial and regex targets, patterns,
// dtypes), written under `root` with seeds seedBase, seedBase + 1, ... and parsed against the model: the
// mixed batch the engine tests run.
import { join } from "node:path";
import { type RandomAdapterOptions, writeRandomAdapter } from "../../scripts/random-adapter.ts";
import { type LoadedAdapter, loadPeftAdapter } from "../../worker/adapters/peft.ts";
import type { ModelConfig } from "../../worker/engine/model-config.ts";

/** A variant: RandomAdapterOptions without its seed; target lists may be readonly literals. */
export type AdapterVariant = Omit<RandomAdapterOptions, "seed" | "targetModules"> & {
  targetModules?: readonly NonNullable<RandomAdapterOptions["targetModules"]>[number][];
};

export function writeAdapterVariants(
  root: string,
  model: ModelConfig,
  variants: readonly AdapterVariant[],
  seedBase: number,
): LoadedAdapter[] {
  return variants.map((variant, i) => {
    const dir = join(root, `adapter-${i}`);
    const { targetModules, ...rest } = variant;
    writeRandomAdapter(dir, model, {
      ...rest,
      seed: seedBase + i,
      ...(targetModules ? { targetModules: [...targetModules] } : {}),
    });
    return loadPeftAdapter(dir, model, { maxRank: 16 });
  });
}
