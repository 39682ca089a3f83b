// Gives a tiny model (scripts/tiny-model.ts) Qwen2.5-Coder's fill-in-the-middle tokens, by renaming three
// special tokens its chat template never writes, so tests can serve `suffix`.
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { FimTokens } from "../../worker/engine/fim-tokens.ts";

const RENAMED: Record<string, keyof FimTokens> = {
  "<|reserved_special_token_0|>": "prefix",
  "<|reserved_special_token_1|>": "suffix",
  "<|eom_id|>": "middle",
};
const CONTENT: Record<keyof FimTokens, string> = {
  prefix: "<|fim_prefix|>",
  suffix: "<|fim_suffix|>",
  middle: "<|fim_middle|>",
};

/** Renames the tokens in tokenizer.json and tokenizer_config.json; returns their ids. */
export function addFimTokens(modelDir: string): FimTokens {
  const ids: Partial<FimTokens> = {};
  const tokenizerPath = join(modelDir, "tokenizer.json");
  const tokenizer = JSON.parse(readFileSync(tokenizerPath, "utf8")) as {
    added_tokens: { id: number; content: string }[];
  };
  for (const token of tokenizer.added_tokens) {
    const role = RENAMED[token.content];
    if (role === undefined) continue;
    token.content = CONTENT[role];
    ids[role] = token.id;
  }
  writeFileSync(tokenizerPath, JSON.stringify(tokenizer));
  const configPath = join(modelDir, "tokenizer_config.json");
  const config = JSON.parse(readFileSync(configPath, "utf8")) as {
    added_tokens_decoder: Record<string, { content: string }>;
  };
  for (const token of Object.values(config.added_tokens_decoder)) {
    const role = RENAMED[token.content];
    if (role !== undefined) token.content = CONTENT[role];
  }
  writeFileSync(configPath, JSON.stringify(config));
  if (ids.prefix === undefined || ids.suffix === undefined || ids.middle === undefined) {
    throw new Error(`${modelDir}: the tokens to rename are not there`);
  }
  return ids as FimTokens;
}
