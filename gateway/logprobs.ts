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

/** `textOffset` is where these tokens start in the completion's text (for chunks after the first). */
export function completionLogprobs(tokens: readonly TokenLogprob[], textOffset = 0): CompletionLogprobs {
  const out: CompletionLogprobs = { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] };
  let offset = textOffset;
  for (const t of tokens) {
    out.tokens.push(t.token);
    out.token_logprobs.push(t.logprob);
    out.top_logprobs.push(Object.fromEntries(t.top.map((top) => [top.token, top.logprob])));
    out.text_offset.push(offset);
    offset += t.token.length;
  }
  return out;
}
