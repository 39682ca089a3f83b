// Chat templates of reasoning models for tests, in the tiny model's Llama-3-style tokens: what matters is
// how they treat reasoning (worker/engine/reasoning-template.ts), as Qwen3's and DeepSeek-R1's do; and
// the tags as tokens of the vocabulary, as those models have them.
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

/** Each turn; an assistant turn's reasoning_content, where given, in its own <think> block. */
const TURNS =
  "{%- for message in messages %}<|start_header_id|>{{ message.role }}<|end_header_id|>\n\n" +
  "{% if message.reasoning_content %}<think>{{ message.reasoning_content }}</think>{% endif %}" +
  "{% if message.role == 'assistant' and '</think>' in message.content %}" +
  "{{ message.content.split('</think>')[-1].lstrip('\\n') }}{%- else %}{{ message.content }}{%- endif %}" +
  "<|eot_id|>{%- endfor %}";

/** Thinks unless told not to (enable_thinking false writes an empty reasoning block into the prompt). */
export const HYBRID_REASONING_TEMPLATE =
  `${TURNS}{%- if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n` +
  "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{%- endif %}";

/** Always thinks: the generation prompt opens the reasoning block. */
export const OPENING_REASONING_TEMPLATE = `${TURNS}{%- if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n<think>\n{% endif %}`;

/**
 * Makes <think> and </think> tokens of a tiny model's vocabulary, as Qwen3 and DeepSeek-R1 add them (not
 * special: they are text): the reserved special tokens 0 and 1 are renamed, so the weights stay as they are.
 * Returns the tags' ids.
 */
export function addReasoningTags(modelDir: string): { open: number; close: number } {
  const renamed: Record<string, string> = {
    "<|reserved_special_token_0|>": "<think>",
    "<|reserved_special_token_1|>": "</think>",
  };
  const ids: Record<string, number> = {};
  const tokenizerPath = join(modelDir, "tokenizer.json");
  const tokenizer = JSON.parse(readFileSync(tokenizerPath, "utf8")) as {
    added_tokens: { id: number; content: string; special: boolean }[];
  };
  for (const token of tokenizer.added_tokens) {
    const tag = renamed[token.content];
    if (tag === undefined) continue;
    token.content = tag;
    token.special = false;
    ids[tag] = token.id;
  }
  writeFileSync(tokenizerPath, JSON.stringify(tokenizer));
  const configPath = join(modelDir, "tokenizer_config.json");
  const config = JSON.parse(readFileSync(configPath, "utf8")) as {
    added_tokens_decoder: Record<string, { content: string; special: boolean }>;
  };
  for (const token of Object.values(config.added_tokens_decoder)) {
    const tag = renamed[token.content];
    if (tag === undefined) continue;
    token.content = tag;
    token.special = false;
  }
  writeFileSync(configPath, JSON.stringify(config));
  if (ids["<think>"] === undefined || ids["</think>"] === undefined) {
    throw new Error(`${modelDir}: no reserved special tokens to rename`);
  }
  return { open: ids["<think>"], close: ids["</think>"] };
}
