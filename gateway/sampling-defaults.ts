// A base's sampling defaults: the values its generation_config.json states (Qwen3: temperature 0.6, top_p
// 0.95, top_k 20; Llama 3.1 Instruct: temperature 0.6, top_p 0.9), which a request that leaves a parameter
// out gets instead of OpenAI's default, as vLLM serves by default. A model is tuned and evaluated at
// these; OpenAI's temperature 1 with no top-k makes many of them ramble or repeat.
import { z } from "zod";

/** The parameters a base may set a default for; absent = OpenAI's default (or vLLM's, for its extras). */
export interface SamplingDefaults {
  temperature?: number;
  top_p?: number;
  /** 0 = off. */
  top_k?: number;
  min_p?: number;
  repetition_penalty?: number;
  /** generation_config.json's max_new_tokens: a completion's length when the request gives none. */
  max_tokens?: number;
}

// Hugging Face writes null for an unset value; the ranges are the API's (schema/api.ts).
const GenerationConfig = z.object({
  temperature: z.number().min(0).max(2).nullish(),
  top_p: z.number().gt(0).max(1).nullish(),
  top_k: z.int().min(-1).nullish(),
  min_p: z.number().min(0).max(1).nullish(),
  repetition_penalty: z.number().gt(0).nullish(),
  max_new_tokens: z.int().positive().nullish(),
});

/**
 * Where a gateway takes its bases' defaults from (`--sampling-defaults`, LUMINET_SAMPLING_DEFAULTS): "model",
 * the generation_config.json; "openai", none (OpenAI's defaults for every base), as vLLM's
 * `--generation-config vllm`.
 */
export const SAMPLING_DEFAULTS_SOURCES = ["model", "openai"] as const;
export type SamplingDefaultsSource = (typeof SAMPLING_DEFAULTS_SOURCES)[number];

/** A setting's value as a source; throws naming the setting for anything else. */
export function samplingDefaultsSource(value: string, setting: string): SamplingDefaultsSource {
  const source = SAMPLING_DEFAULTS_SOURCES.find((s) => s === value);
  if (!source) throw new Error(`${setting} must be model or openai, got ${value}`);
  return source;
}

export class SamplingDefaultsError extends Error {
  override name = "SamplingDefaultsError";
}

/** The defaults a generation_config.json (text or parsed) states; none without the file. */
export function samplingDefaultsOf(
  generationConfig: string | object | undefined,
  source: string,
): SamplingDefaults {
  if (generationConfig === undefined) return {};
  let json: unknown = generationConfig;
  if (typeof generationConfig === "string") {
    try {
      json = JSON.parse(generationConfig);
    } catch (error) {
      throw new SamplingDefaultsError(`${source}: not JSON (${(error as Error).message})`);
    }
  }
  const parsed = GenerationConfig.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new SamplingDefaultsError(`${source}: ${issue.path.join(".") || "the file"}: ${issue.message}`);
  }
  const config = parsed.data;
  const defaults: SamplingDefaults = {};
  if (config.temperature != null) defaults.temperature = config.temperature;
  if (config.top_p != null) defaults.top_p = config.top_p;
  // Hugging Face's and vLLM's "off" for top-k are 0 and -1.
  if (config.top_k != null) defaults.top_k = Math.max(0, config.top_k);
  if (config.min_p != null) defaults.min_p = config.min_p;
  if (config.repetition_penalty != null) defaults.repetition_penalty = config.repetition_penalty;
  if (config.max_new_tokens != null) defaults.max_tokens = config.max_new_tokens;
  return defaults;
}
