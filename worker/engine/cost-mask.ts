// The mask of a constraint on the whole output (regex-mode.ts, grammar-mode.ts), given per token what the
// output would still need after it: the fewest characters to a match, or -1 where the token cannot come
// next. With a budget (the tokens the sequence may still draw, this one included) a token is kept only if
// that many characters fit in the tokens left after it (a byte-level vocabulary has a token for every
// byte, so a character never needs more than one token per byte, and the ones a match needs are at worst
// one token each); where none fits, every token the constraint takes is kept. Stop tokens are allowed
// where the output is whole.

import { NoTokenLeftError } from "./no-token-left.ts";

/**
 * `logits` into `out` with every token that cannot come next at -inf; throws naming `what` when no token
 * is left.
 */
export function maskByCost(
  logits: Float32Array,
  out: Float32Array,
  cost: Int32Array,
  budget: number,
  /** The output is whole and a stop token may end it (min_tokens allowing). */
  whole: boolean,
  stopIds: readonly number[],
  what: string,
): Float32Array {
  out.fill(Number.NEGATIVE_INFINITY);
  const spare = budget - 1;
  let within = false;
  for (let id = 0; id < cost.length; id++) if (cost[id]! >= 0 && cost[id]! <= spare) within = true;
  const limit = within || whole ? spare : Number.POSITIVE_INFINITY;
  let allowed = 0;
  for (let id = 0; id < cost.length; id++) {
    if (cost[id]! < 0 || cost[id]! > limit) continue;
    out[id] = logits[id]!;
    allowed++;
  }
  for (const id of stopIds) {
    if (id >= logits.length) continue;
    if (whole) {
      out[id] = logits[id]!;
      allowed++;
    } else if (out[id] !== Number.NEGATIVE_INFINITY) {
      // A stop token the output could take as text (stop_token_ids may name any token) would end it
      // unfinished: not until the output is whole.
      out[id] = Number.NEGATIVE_INFINITY;
      allowed--;
    }
  }
  if (allowed === 0) {
    throw new NoTokenLeftError(
      `structured output: no token the request allows can continue the ${what} (check stop_token_ids, allowed_token_ids and bad_words against the format)`,
    );
  }
  return out;
}
