// Writes a PEFT LoRA adapter folder with seeded random weights for a given base model: the fixture of
// every adapter test and of `luminet model init-tiny --adapters N`. Unlike a fresh PEFT init (B = 0, a
// no-op) both A and B are random, so each adapter visibly moves the logits.
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { isTargeted, moduleRank, parsePeftConfig } from "../worker/adapters/peft-config.ts";
import { float32ToBfloat16, float32ToFloat16 } from "../worker/engine/dtype.ts";
import {
  MODULE_KINDS,
  type ModelConfig,
  type ModuleKind,
  moduleLeafName,
  modulePath,
  moduleShape,
} from "../worker/engine/model-config.ts";
import { Prng } from "../worker/engine/prng.ts";
import { type TensorToWrite, writeSafetensors } from "../worker/engine/safetensors.ts";
import { UniformStream } from "./uniform-stream.ts";

export interface RandomAdapterOptions {
  rank: number;
  /** lora_alpha; defaults to rank (scale 1 without rsLoRA). */
  alpha?: number;
  seed: number;
  /** Defaults to all seven linear modules. Ignored when targetModulesRegex is given. */
  targetModules?: ModuleKind[];
  dtype?: "F32" | "F16" | "BF16";
  useRslora?: boolean;
  rankPattern?: Record<string, number>;
  alphaPattern?: Record<string, number>;
  loraBias?: boolean;
  /** Written to the config only: PEFT ignores fan_in_fan_out on torch.nn.Linear, so tensors keep [r, in] / [out, r]. */
  fanInFanOut?: boolean;
  /** target_modules as a regex string (full match against e.g. "model.layers.0.self_attn.q_proj"). */
  targetModulesRegex?: string;
  baseModelNameOrPath?: string;
}

// A is PEFT's kaiming-uniform range, U(±1/sqrt(in)), so |A x| ≈ |x|/sqrt(3) per row; B's spread is then
// chosen so that B·A·x has about DELTA_RATIO times the rms of x before scaling — comparable to what a
// 0.02-std base weight adds, large enough to move logits, small enough to stay far from overflow in f16.
const DELTA_RATIO = 0.2;
const BIAS_STD = 0.05;
// B and the bias are uniform with these stds (a uniform draw in ±half has std half / √3).
const SQRT3 = Math.sqrt(3);

function toDtype(values: Float32Array, dtype: "F32" | "F16" | "BF16"): ArrayBufferView {
  if (dtype === "F16") return float32ToFloat16(values);
  if (dtype === "BF16") return float32ToBfloat16(values);
  return values;
}

export function writeRandomAdapter(dir: string, model: ModelConfig, options: RandomAdapterOptions): void {
  const dtype = options.dtype ?? "F32";
  const config = {
    peft_type: "LORA",
    task_type: "CAUSAL_LM",
    base_model_name_or_path: options.baseModelNameOrPath ?? null,
    r: options.rank,
    lora_alpha: options.alpha ?? options.rank,
    target_modules: options.targetModulesRegex ?? (options.targetModules ?? MODULE_KINDS).map(moduleLeafName),
    use_rslora: options.useRslora ?? false,
    rank_pattern: options.rankPattern ?? {},
    alpha_pattern: options.alphaPattern ?? {},
    fan_in_fan_out: options.fanInFanOut ?? false,
    bias: "none",
    lora_bias: options.loraBias ?? false,
    lora_dropout: 0,
    use_dora: false,
    modules_to_save: null,
    init_lora_weights: true,
    inference_mode: true,
    layers_to_transform: null,
    layers_pattern: null,
  };
  // The loader's own rules decide which modules exist and their ranks, so fixture and loader cannot drift.
  const parsed = parsePeftConfig(config);

  const tensors: TensorToWrite[] = [];
  for (let layer = 0; layer < model.numLayers; layer++) {
    for (const [k, kind] of MODULE_KINDS.entries()) {
      const path = modulePath(layer, kind);
      if (!isTargeted(parsed, path)) continue;
      const r = moduleRank(parsed, path);
      const { inFeatures, outFeatures } = moduleShape(model, kind);
      // One stream per module: a module's values depend only on the seed, its position and its shape.
      const rng = new UniformStream(new Prng(options.seed, layer * MODULE_KINDS.length + k));
      const a = new Float32Array(r * inFeatures);
      rng.fill(a, 0, 1 / Math.sqrt(inFeatures));
      const b = new Float32Array(outFeatures * r);
      rng.fill(b, 0, SQRT3 * DELTA_RATIO * Math.sqrt(3 / r));
      const name = `base_model.model.${path}`;
      tensors.push({ name: `${name}.lora_A.weight`, dtype, shape: [r, inFeatures], data: toDtype(a, dtype) });
      tensors.push({
        name: `${name}.lora_B.weight`,
        dtype,
        shape: [outFeatures, r],
        data: toDtype(b, dtype),
      });
      if (options.loraBias) {
        const bias = new Float32Array(outFeatures);
        rng.fill(bias, 0, SQRT3 * BIAS_STD);
        tensors.push({
          name: `${name}.lora_B.bias`,
          dtype,
          shape: [outFeatures],
          data: toDtype(bias, dtype),
        });
      }
    }
  }
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "adapter_config.json"), `${JSON.stringify(config, null, 2)}\n`);
  writeSafetensors(join(dir, "adapter_model.safetensors"), tensors, { format: "pt" });
}
