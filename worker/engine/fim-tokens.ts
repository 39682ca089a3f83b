// Fill-in-the-middle: code models trained to write what goes between a prefix and a suffix (what an IDE's
// completion asks, OpenAI's `suffix`) read the prompt as prefix token, prefix, suffix token, suffix, middle
// token, and generate the middle (PSM order). Each family names the three tokens its own way; a tokenizer
// that has all three of one family serves FIM. CodeLlama's ▁<PRE> / ▁<SUF> / ▁<MID>, which need spaces
// around the parts, and Codestral's suffix-first [SUFFIX] / [PREFIX] are not among them.

export interface FimTokens {
  prefix: number;
  suffix: number;
  middle: number;
}

/** Prefix, suffix and middle tokens, by family. */
const FAMILIES: readonly (readonly [string, string, string])[] = [
  // Qwen2.5-Coder, Qwen3-Coder
  ["<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"],
  // StarCoder, StarCoder2, SantaCoder, Granite code
  ["<fim_prefix>", "<fim_suffix>", "<fim_middle>"],
  // DeepSeek-Coder: begin, hole (where the middle goes), end
  ["<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"],
];

/** The FIM tokens of the first family whose three tokens the vocabulary holds; null where none does. */
export function fimTokens(idOf: (token: string) => number | null): FimTokens | null {
  for (const [prefix, suffix, middle] of FAMILIES) {
    const ids = [idOf(prefix), idOf(suffix), idOf(middle)];
    if (ids.every((id) => id !== null)) return { prefix: ids[0]!, suffix: ids[1]!, middle: ids[2]! };
  }
  return null;
}

/**
 * A FIM prompt's ids: what the tokenizer puts before any text (its bos, if it adds one), then the prefix
 * token and the prefix's ids, the suffix token and the suffix's, and the middle token, after which the
 * model writes the middle.
 */
export function fimPromptIds(
  tokens: FimTokens,
  start: readonly number[],
  prefix: readonly number[],
  suffix: readonly number[],
): number[] {
  return [...start, tokens.prefix, ...prefix, tokens.suffix, ...suffix, tokens.middle];
}
