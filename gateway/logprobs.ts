// A worker's per-token logprobs in the two shapes OpenAI answers with: chat's list of token objects and
// legacy completions' parallel arrays.
import type { ChatTokenLogprob, CompletionLogprobs } from "../schema/api.ts";
import type { TokenLogprob } from "../schema/wire.ts";

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

  next(bytes: readonly number[]): number {
    const at = this.offset;
    this.offset += this.decoder.decode(Uint8Array.from(bytes), { stream: true }).length;
    return at;
  }
}

export function completionLogprobs(
  tokens: readonly TokenLogprob[],
  offsets: TextOffsets = new TextOffsets(),
): CompletionLogprobs {
  const out: CompletionLogprobs = { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] };
  for (const t of tokens) {
    out.tokens.push(t.token);
    out.token_logprobs.push(t.logprob);
    out.top_logprobs.push(Object.fromEntries(t.top.map((top) => [top.token, top.logprob])));
    out.text_offset.push(offsets.next(t.bytes));
  }
  return out;
}
