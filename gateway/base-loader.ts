// The base catalog's entries: a base named on the command line (`--model NAME=DIR`) gets its tokenizer
// and sampling defaults from the model folder and its context length from the base_models row, which is registered from the
// folder's config.json when missing (prices 0 until someone sets them). Adapters reference that row.
// registerBaseModel does the same from files already in memory (the Workers bundle).
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { eq } from "drizzle-orm";
import type { Db } from "../db/open.ts";
import { type BaseArchitecture, baseModels } from "../schema/db.ts";
import { ARCHITECTURE_CLASSES, loadModelConfig, type ModelConfig } from "../worker/engine/model-config.ts";
import { loadTokenizer, type Tokenizer } from "../worker/engine/tokenizer.ts";
import type { BaseModelInfo } from "./bases.ts";
import { type SamplingDefaultsSource, samplingDefaultsOf } from "./sampling-defaults.ts";

export interface BaseModelSource {
  name: string;
  dir: string;
}

export function architectureOf(config: ModelConfig): BaseArchitecture {
  return {
    family: ARCHITECTURE_CLASSES[config.architecture],
    layers: config.numLayers,
    hiddenSize: config.hiddenSize,
    intermediateSize: config.intermediateSize,
    attentionHeads: config.numHeads,
    kvHeads: config.numKvHeads,
    headDim: config.headDim,
    vocabSize: config.vocabSize,
  };
}

/** Parses `NAME=DIR`, the form of `--model`; the name may hold "/" and ":" but not "=". */
export function parseBaseModelSource(spec: string): BaseModelSource {
  const at = spec.indexOf("=");
  if (at <= 0 || at === spec.length - 1) {
    throw new Error(`--model expects NAME=DIR (e.g. meta-llama/Llama-3.2-1B=./models/llama), got "${spec}"`);
  }
  return { name: spec.slice(0, at), dir: spec.slice(at + 1) };
}

export interface LoadBaseOptions {
  /** Context length to register when the base has no row yet; default the model's max positions. */
  contextLength?: number;
  /** "openai": the generation_config.json's sampling values are not defaults; default "model". */
  samplingDefaults?: SamplingDefaultsSource;
}

export async function loadBaseModel(
  db: Db,
  source: BaseModelSource,
  options: LoadBaseOptions = {},
): Promise<BaseModelInfo> {
  const config = loadModelConfig(source.dir);
  const tokenizer = loadTokenizer(source.dir);
  const generationPath = join(source.dir, "generation_config.json");
  const generationConfig = existsSync(generationPath) ? readFileSync(generationPath, "utf8") : undefined;
  return registerBaseModel(db, { name: source.name, config, tokenizer, generationConfig }, options);
}

/**
 * Registers a base from its parsed config when it has no row yet, then returns it with its row's context
 * length. For runtimes that bring the files themselves (gateway/worker.ts) as for a model folder.
 */
export async function registerBaseModel(
  db: Db,
  base: {
    name: string;
    config: ModelConfig;
    tokenizer: Tokenizer;
    generationConfig?: string | object | undefined;
  },
  options: LoadBaseOptions = {},
): Promise<BaseModelInfo> {
  const samplingDefaults =
    options.samplingDefaults === "openai"
      ? {}
      : samplingDefaultsOf(base.generationConfig, `base ${base.name}: generation_config.json`);
  await db
    .insert(baseModels)
    .values({
      name: base.name,
      architecture: architectureOf(base.config),
      contextLength: options.contextLength ?? base.config.maxPositions,
      inputPriceMicrosPerMillion: 0,
      outputPriceMicrosPerMillion: 0,
    })
    .onConflictDoNothing();
  const [row] = await db.select().from(baseModels).where(eq(baseModels.name, base.name));
  if (!row) throw new Error(`base model "${base.name}" was not registered`);
  return {
    name: row.name,
    tokenizer: base.tokenizer,
    contextLength: row.contextLength,
    samplingDefaults,
    created: Math.floor(row.createdAt.getTime() / 1000),
  };
}
