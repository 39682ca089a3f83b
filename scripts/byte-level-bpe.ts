// A real byte-level BPE tokenizer.json, built from scratch for the random test models: GPT-2's byte to
// unicode alphabet, merges learned by BPE over a small built-in corpus, filler merges until the vocabulary
// has exactly the requested size, and special tokens at the top of the vocabulary.
import { BYTE_TO_UNICODE } from "../worker/engine/token-bytes.ts";

// The split the ByteLevel pre-tokenizer applies (use_regex: true); training on the same pieces makes the
// learned merges the ones encoding will actually use.
const PRETOKENIZE = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

const CORPUS = `The quick brown fox jumps over the lazy dog. A model reads the prompt, one token at a time,
and writes the answer back. Each request names an adapter; the server keeps the adapters it uses most in
memory and loads the others from disk when they are needed. When the batch is full, the scheduler waits for
a sequence to finish before it starts the next one. Tokens are counted for every request, and the bill is
written to the database at the end of the day. Hello, world! How are you today? I am fine, thank you.
What is the capital of France? The capital of France is Paris. Please write a short poem about the sea.
The sea is wide and the wind is cold; the ships come home when the day is old.

function add(a: number, b: number): number {
  return a + b;
}
const items = [1, 2, 3].map((x) => x * 2);
for (let i = 0; i < items.length; i++) {
  console.log("item", i, items[i]);
}
export interface Request { id: string; prompt: string; maxTokens: number }

def main():
    for line in open("input.txt"):
        print(line.strip())
    return 0

if __name__ == "__main__":
    main()
`;

/** The added-token fields tokenizer.json carries for every special token. */
function addedToken(id: number, content: string): Record<string, unknown> {
  return { id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true };
}

function learnMerges(corpus: string, maxMerges: number, vocab: Map<string, number>): [string, string][] {
  const wordCounts = new Map<string, number>();
  const encoder = new TextEncoder();
  for (const piece of corpus.match(PRETOKENIZE) ?? []) {
    const word = [...encoder.encode(piece)].map((b) => BYTE_TO_UNICODE[b]!).join("");
    wordCounts.set(word, (wordCounts.get(word) ?? 0) + 1);
  }
  const words = [...wordCounts].map(([w, count]) => ({ symbols: [...w], count }));
  const merges: [string, string][] = [];
  while (merges.length < maxMerges) {
    const pairCounts = new Map<string, number>();
    for (const { symbols, count } of words) {
      for (let i = 0; i + 1 < symbols.length; i++) {
        const key = `${symbols[i]} ${symbols[i + 1]}`;
        pairCounts.set(key, (pairCounts.get(key) ?? 0) + count);
      }
    }
    let best: string | null = null;
    let bestCount = 1;
    for (const [key, count] of pairCounts) {
      // Ties go to the smaller pair so the result is the same on every run.
      if (count > bestCount || (count === bestCount && best !== null && key < best)) {
        best = key;
        bestCount = count;
      }
    }
    if (best === null) break;
    const [a, b] = best.split(" ") as [string, string];
    merges.push([a, b]);
    if (!vocab.has(a + b)) vocab.set(a + b, vocab.size);
    for (const word of words) {
      const s = word.symbols;
      const merged: string[] = [];
      for (let i = 0; i < s.length; i++) {
        if (s[i] === a && s[i + 1] === b) {
          merged.push(a + b);
          i++;
        } else {
          merged.push(s[i]!);
        }
      }
      word.symbols = merged;
    }
  }
  return merges;
}

// Lowercase word-like tokens grown one letter at a time: valid merges that keep the vocabulary plausible.
function fillMerges(vocab: Map<string, number>, target: number, merges: [string, string][]): void {
  const letters = [..."etaoinsrhldcumfpgwybvkxjqz"];
  const bases = [...vocab.keys()].filter((t) => /^Ġ?[a-z]*$/.test(t) && t !== "");
  for (let i = 0; vocab.size < target && i < bases.length; i++) {
    const base = bases[i]!;
    for (const c of letters) {
      if (vocab.size >= target) break;
      const token = base + c;
      if (vocab.has(token)) continue;
      vocab.set(token, vocab.size);
      merges.push([base, c]);
      bases.push(token);
    }
  }
}

export interface ByteLevelTokenizer {
  /** tokenizer.json contents. */
  json: Record<string, unknown>;
  /** Id of each special token. */
  specialIds: Record<string, number>;
}

/**
 * Builds a tokenizer.json whose vocabulary (special tokens included) has exactly vocabSize entries.
 * With bosToken set, the post-processor prepends it when special tokens are requested, as Llama 3's does.
 */
export function buildByteLevelTokenizer(options: {
  vocabSize: number;
  specialTokens: readonly string[];
  bosToken: string | null;
}): ByteLevelTokenizer {
  const { vocabSize, specialTokens } = options;
  const regular = vocabSize - specialTokens.length;
  if (regular < 256) {
    throw new RangeError(
      `vocab size ${vocabSize} leaves no room for 256 byte tokens and ${specialTokens.length} special tokens`,
    );
  }
  const vocab = new Map<string, number>();
  for (const ch of BYTE_TO_UNICODE) vocab.set(ch, vocab.size);
  const merges = learnMerges(CORPUS, regular - 256, vocab);
  fillMerges(vocab, regular, merges);
  if (vocab.size !== regular) throw new RangeError(`could not grow the vocabulary to ${regular} tokens`);

  const specialIds: Record<string, number> = {};
  specialTokens.forEach((t, i) => {
    specialIds[t] = regular + i;
  });
  const bos = options.bosToken;
  if (bos !== null && specialIds[bos] === undefined)
    throw new RangeError(`bos token ${bos} is not a special token`);
  const postProcessor =
    bos === null
      ? null
      : {
          type: "TemplateProcessing",
          single: [{ SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
          pair: [
            { SpecialToken: { id: bos, type_id: 0 } },
            { Sequence: { id: "A", type_id: 0 } },
            { SpecialToken: { id: bos, type_id: 1 } },
            { Sequence: { id: "B", type_id: 1 } },
          ],
          special_tokens: { [bos]: { id: bos, ids: [specialIds[bos]], tokens: [bos] } },
        };
  return {
    specialIds,
    json: {
      version: "1.0",
      truncation: null,
      padding: null,
      added_tokens: specialTokens.map((t) => addedToken(specialIds[t]!, t)),
      normalizer: null,
      pre_tokenizer: { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
      post_processor: postProcessor,
      decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
      model: {
        type: "BPE",
        dropout: null,
        unk_token: null,
        continuing_subword_prefix: null,
        end_of_word_suffix: null,
        fuse_unk: false,
        byte_fallback: false,
        ignore_merges: false,
        vocab: Object.fromEntries(vocab),
        merges,
      },
    },
  };
}
