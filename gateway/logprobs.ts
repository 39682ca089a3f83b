// A worker's per-token logprobs in the two shapes OpenAI answers with: chat's list of token objects and
// legacy completions' parallel arrays (with echo, the prompt's tokens first); and a prompt's logprobs in
// vLLM's prompt_logprobs shape.
import type { ChatTokenLogprob, CompletionLogprobs, PromptLogprobsOut } from "../schema/api.ts";
import type { PromptTokenLogprob, TokenLogprob } from "../schema/wire.ts";
import { tokenText } from "../worker/engine/token-bytes.ts";
import type { Tokenizer } from "../worker/engine/tokenizer.ts";

export function chatLogprobs(tokens: readonly TokenLogprob[]): ChatTokenLogprob[] {
  return tokens.map((t) => ({
    token: t.token,
    logprob: t.logprob,
    bytes: t.bytes,
    top_logprobs: t.top.map((top) => ({ token: top.token, logprob: top.logprob, bytes: top.bytes })),
  }));
}

/**
 * Where each token starts in a completion's text, from the tokens' bytes: a token that ends inside a
 * character adds nothing until the token that completes it. One per completion, across its stream's chunks.
 */
export class TextOffsets {
  private offset = 0;
  private readonly decoder = new TextDecoder();

  next(bytes: readonly number[] | Uint8Array): number {
    const at = this.offset;
    this.offset += this.decoder.decode(Uint8Array.from(bytes), { stream: true }).length;
    return at;
  }
}

/**
 * A legacy top_logprobs entry: the most likely tokens and, as OpenAI always returns it, the chosen token
 * itself (so up to logprobs + 1 entries; with logprobs 0, the chosen token alone).
 */
function topWithChosen(
  top: readonly { token: string; logprob: number }[],
  chosen: { token: string; logprob: number },
): Record<string, number> {
  const entries = Object.fromEntries(top.map((t) => [t.token, t.logprob]));
  if (!(chosen.token in entries)) entries[chosen.token] = chosen.logprob;
  return entries;
}

export function completionLogprobs(
  tokens: readonly TokenLogprob[],
  offsets: TextOffsets = new TextOffsets(),
): CompletionLogprobs {
  const out: CompletionLogprobs = { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] };
  for (const t of tokens) {
    out.tokens.push(t.token);
    out.token_logprobs.push(t.logprob);
    out.top_logprobs.push(topWithChosen(t.top, t));
    out.text_offset.push(offsets.next(t.bytes));
  }
  return out;
}

/**
 * Echoed logprobs' prompt part, which the generated tokens' continue (same `offsets`): the first prompt
 * token has no logprob (null), each later one its own and its `top` alternatives. A special token (the
 * bos a text prompt is encoded with) adds no text: the echoed text is the prompt as given.
 */
export function echoedPromptLogprobs(
  tokenizer: Tokenizer,
  promptIds: readonly number[],
  entries: readonly PromptTokenLogprob[],
  top: number,
  offsets: TextOffsets,
): CompletionLogprobs {
  const first = promptIds[0]!;
  const firstBytes = tokenizer.tokenBytes(first);
  const out: CompletionLogprobs = {
    tokens: [tokenText(firstBytes)],
    token_logprobs: [null],
    top_logprobs: [null],
    text_offset: [offsets.next(tokenizer.isSpecial(first) ? [] : firstBytes)],
  };
  for (const e of entries) {
    out.tokens.push(e.token);
    out.token_logprobs.push(e.logprob);
    out.top_logprobs.push(topWithChosen(e.top.slice(0, top), e));
    out.text_offset.push(offsets.next(tokenizer.isSpecial(e.token_id) ? [] : e.bytes));
  }
  return out;
}

/** Two legacy logprobs, one after the other (an echo's prompt part, then the generated tokens'). */
export function concatLogprobs(a: CompletionLogprobs, b: CompletionLogprobs): CompletionLogprobs {
  return {
    tokens: [...a.tokens, ...b.tokens],
    token_logprobs: [...a.token_logprobs, ...b.token_logprobs],
    top_logprobs: [...a.top_logprobs, ...b.top_logprobs],
    text_offset: [...a.text_offset, ...b.text_offset],
  };
}

/**
 * vLLM's prompt_logprobs: null for the first prompt token, then per token a map from token id to its
 * logprob, rank and text: the prompt's own token first, then the `top` most likely not already there.
 */
export function promptLogprobsOut(entries: readonly PromptTokenLogprob[], top: number): PromptLogprobsOut {
  return [
    null,
    ...entries.map((e) => {
      const out: NonNullable<PromptLogprobsOut[number]> = {
        [e.token_id]: { logprob: e.logprob, rank: e.rank, decoded_token: e.token },
      };
      for (const [i, t] of e.top.slice(0, top).entries()) {
        out[t.token_id] ??= { logprob: t.logprob, rank: i + 1, decoded_token: t.token };
      }
      return out;
    }),
  ];
}
