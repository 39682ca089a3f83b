// The base models this gateway serves: for each, the tokenizer that turns prompts into token ids (workers
// receive ids, never text) and the context length requests are checked against. Runtime-agnostic: the
// Node entry loads tokenizers from model folders (gateway/base-loader.ts); another runtime brings its own.
import type { Tokenizer } from "../worker/engine/tokenizer.ts";
import type { SamplingDefaults } from "./sampling-defaults.ts";

export interface BaseModelInfo {
  name: string;
  tokenizer: Tokenizer;
  /** Prompt plus completion tokens may not exceed this. */
  contextLength: number;
  /** What a request that leaves a sampling parameter out gets (generation_config.json). */
  samplingDefaults: SamplingDefaults;
  /** Unix seconds, for /v1/models. */
  created: number;
}

export class BaseCatalog {
  readonly #bases = new Map<string, BaseModelInfo>();

  constructor(bases: readonly BaseModelInfo[]) {
    for (const base of bases) {
      if (this.#bases.has(base.name)) throw new Error(`base model "${base.name}" is listed twice`);
      this.#bases.set(base.name, base);
    }
  }

  get(name: string): BaseModelInfo | undefined {
    return this.#bases.get(name);
  }

  list(): BaseModelInfo[] {
    return [...this.#bases.values()];
  }
}
