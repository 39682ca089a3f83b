// Reasoning ("thinking") models write their reasoning between <think> and </think> before the answer:
// Qwen3, QwQ, DeepSeek-R1 and its distillations. Their chat templates say so: they name the tags (to drop
// earlier turns' reasoning, or to open the block in the generation prompt), and Qwen3's hybrid models read
// `enable_thinking`, which false turns into an empty block so the model answers at once.

export const THINK_OPEN = "<think>";
export const THINK_CLOSE = "</think>";

export interface ReasoningTemplate {
  /** The template reads `enable_thinking` (Qwen3's hybrid models): false asks for an answer without reasoning. */
  switchable: boolean;
  /**
   * The generation prompt ends inside an opened <think> (DeepSeek-R1, Qwen3's thinking-only releases): the
   * output starts as reasoning and holds only the closing tag.
   */
  opensInPrompt: boolean;
  /**
   * The tags' token ids where each tag is one token of the vocabulary (Qwen3, QwQ and DeepSeek-R1 add them
   * as tokens); null otherwise. A structured answer then reasons first and its grammar holds from the token
   * after the closing tag (reasoning-gate.ts).
   */
  tagIds: { open: number; close: number } | null;
}

/** The id of the one token `text` encodes to, or null where it takes more than one. */
export type SingleTokenOf = (text: string) => number | null;

/**
 * What a chat template says about reasoning, or null for a model that does not reason. `renderPrompt`
 * renders the template's generation prompt after one user message; a template that cannot render that
 * is taken not to open the block.
 */
export function reasoningTemplate(
  source: string | null,
  renderPrompt: () => string,
  singleToken: SingleTokenOf,
): ReasoningTemplate | null {
  if (source === null || !source.includes(THINK_OPEN)) return null;
  let opensInPrompt = false;
  try {
    opensInPrompt = renderPrompt().trimEnd().endsWith(THINK_OPEN);
  } catch {
    opensInPrompt = false;
  }
  const open = singleToken(THINK_OPEN);
  const close = singleToken(THINK_CLOSE);
  const tagIds = open !== null && close !== null ? { open, close } : null;
  return { switchable: /\benable_thinking\b/.test(source), opensInPrompt, tagIds };
}
