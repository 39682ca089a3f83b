// The fewest tokens a text can encode to, read off its UTF-8 length without encoding it: no token covers
// more bytes than the longest one in the vocabulary, so a text of B bytes takes at least B / longest
// tokens. A gateway tokenizes on its event loop, about a microsecond a byte, so a prompt of megabytes would
// hold every other request for seconds; with this floor a prompt that surely cannot fit the context is
// refused at once, and tokenizing is bounded by what a prompt that fits can need.
//
// The floor holds only where the tokenizer cannot make text disappear before it is split into tokens. A
// normalizer may shrink it: Unicode normalization and lowercasing map a character of up to four UTF-8
// bytes to at least one byte (NFKC: "𝐀", four bytes, to "A"; NFC folds a base and its marks into one
// character, never below a quarter of their bytes), so the floor divides by four once more; one that
// strips accents or characters, a pre-tokenizer that drops whitespace, or a model that folds any run of
// unknown characters into one token could shrink text without bound, and those tokenizers get no floor
// (0: encode and see).
import { utf8Length } from "../../core/utf8-length.ts";

/** Normalizers that map every character to at least one byte: the most a text can shrink is 4 to 1. */
const NON_DELETING_NORMALIZERS = new Set(["NFC", "NFD", "NFKC", "NFKD", "Lowercase", "Prepend"]);
/** The most bytes a character takes in UTF-8, and so the most a non-deleting normalizer shrinks text by. */
const MAX_CHAR_BYTES = 4;
/** Pre-tokenizers that split text into words without dropping any of it. */
const KEEPING_PRE_TOKENIZERS = new Set(["ByteLevel", "Metaspace", "Digits", "Punctuation", "UnicodeScripts"]);

type Json = Record<string, unknown>;

const isObject = (value: unknown): value is Json =>
  typeof value === "object" && value !== null && !Array.isArray(value);

/**
 * How much a tokenizer.json's normalizer may shrink a text's UTF-8 length (1: not at all); null where it
 * may delete characters.
 */
function normalizerShrink(normalizer: unknown): number | null {
  if (normalizer === null || normalizer === undefined) return 1;
  if (!isObject(normalizer)) return null;
  if (normalizer.type === "Sequence") {
    const steps = Array.isArray(normalizer.normalizers) ? normalizer.normalizers : null;
    if (steps === null) return null;
    let shrink = 1;
    for (const step of steps) {
      const one = normalizerShrink(step);
      if (one === null) return null;
      shrink = Math.max(shrink, one);
    }
    return shrink;
  }
  if (normalizer.type === "Replace") {
    // A literal replaced by one at least as long shrinks nothing; a pattern may match anything.
    const pattern = isObject(normalizer.pattern) ? normalizer.pattern.String : undefined;
    const content = normalizer.content;
    return typeof pattern === "string" &&
      typeof content === "string" &&
      utf8Length(content) >= utf8Length(pattern)
      ? 1
      : null;
  }
  return NON_DELETING_NORMALIZERS.has(String(normalizer.type)) ? MAX_CHAR_BYTES : null;
}

function keepsText(preTokenizer: unknown): boolean {
  if (preTokenizer === null || preTokenizer === undefined) return true;
  if (!isObject(preTokenizer)) return false;
  if (preTokenizer.type === "Sequence") {
    return Array.isArray(preTokenizer.pretokenizers) && preTokenizer.pretokenizers.every(keepsText);
  }
  // Split keeps what it splits on unless told to remove it.
  if (preTokenizer.type === "Split") return preTokenizer.behavior !== "Removed";
  return KEEPING_PRE_TOKENIZERS.has(String(preTokenizer.type));
}

/**
 * The longest token of a BPE model (its vocabulary's strings and the added tokens' contents, in UTF-8
 * bytes: a byte-level token's string is at least as long as the bytes it stands for); null for another
 * model, or one that folds a run of unknown characters into one token.
 */
function longestToken(model: unknown, addedTokens: unknown): number | null {
  if (!isObject(model) || model.type !== "BPE" || !isObject(model.vocab)) return null;
  const foldsUnknown = model.fuse_unk === true && model.byte_fallback !== true && model.unk_token != null;
  if (foldsUnknown) return null;
  let longest = 1;
  for (const token of Object.keys(model.vocab)) longest = Math.max(longest, utf8Length(token));
  for (const added of Array.isArray(addedTokens) ? addedTokens : []) {
    if (isObject(added) && typeof added.content === "string") {
      longest = Math.max(longest, utf8Length(added.content));
    }
  }
  return longest;
}

/** From a tokenizer.json: the fewest tokens a text can encode to (0 where the tokenizer allows no floor). */
export function tokenCountFloor(tokenizerJson: Json): (text: string) => number {
  const shrink = normalizerShrink(tokenizerJson.normalizer);
  const longest = longestToken(tokenizerJson.model, tokenizerJson.added_tokens);
  if (shrink === null || longest === null || !keepsText(tokenizerJson.pre_tokenizer)) return () => 0;
  const bytesPerToken = longest * shrink;
  return (text) => Math.floor(utf8Length(text) / bytesPerToken);
}
