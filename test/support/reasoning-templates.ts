// Chat templates of reasoning models for tests, in the tiny model's Llama-3-style tokens: what matters is
// how they treat reasoning (worker/engine/reasoning-template.ts), as Qwen3's and DeepSeek-R1's do.

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
