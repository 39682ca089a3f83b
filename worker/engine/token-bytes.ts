// Each token's own bytes, read from the vocabulary the way the tokenizer's decoder maps it. Decoding one id
// alone cannot give them: a byte-level token that ends inside a UTF-8 character decodes to U+FFFD. OpenAI's
// logprobs carry these bytes so a client can join the tokens of a split character, and name such a token
// "bytes:\xNN…" since its text is not a string.

/** GPT-2's reversible map from each byte to a printable unicode character (the ByteLevel alphabet). */
export const BYTE_TO_UNICODE: readonly string[] = (() => {
  const printable = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || b >= 0xae;
  const out: string[] = new Array(256);
  let n = 0;
  for (let b = 0; b < 256; b++) out[b] = String.fromCodePoint(printable(b) ? b : 256 + n++);
  return out;
})();

const UNICODE_TO_BYTE = new Map(BYTE_TO_UNICODE.map((char, byte) => [char, byte]));

/** What the bytes of a token id come from. */
export interface TokenSource {
  /** tokenizer.json's `decoder` (null or absent where it has none). */
  decoder: unknown;
  /** The vocabulary entry of an id (model vocab or added token); undefined outside the vocabulary. */
  tokenOf(id: number): string | undefined;
  /** Whether an id is an added token (special or not), whose content is its text as written. */
  isAdded(id: number): boolean;
  /** The decode of one id, for decoders whose mapping is not known here. */
  decodeAlone(id: number): string;
}

const utf8 = new TextEncoder();
const BYTE_FALLBACK_TOKEN = /^<0x([0-9A-Fa-f]{2})>$/;

/**
 * A function from token id to its bytes: byte-level vocabularies (GPT-2, Llama 3, Qwen2) map each character
 * back to its byte; SentencePiece ones (Llama 2, Mistral) turn "<0xNN>" tokens into their byte and their
 * Replace/Metaspace steps "▁" into a space (a word-start token keeps its space even where a decode drops it
 * at the start of the text); any other decoder falls back to the UTF-8 of the id decoded alone.
 */
export function tokenBytesReader(source: TokenSource): (id: number) => Uint8Array {
  const steps = decoderSteps(source.decoder);
  const types = new Set(steps.map((s) => s.type));
  const byteLevel = types.has("ByteLevel");
  const byteFallback = types.has("ByteFallback");
  const replacements = steps.flatMap((s): [string, string][] => {
    if (s.type === "Replace" && typeof s.pattern?.String === "string" && typeof s.content === "string")
      return [[s.pattern.String, s.content]];
    if (s.type === "Metaspace") return [[typeof s.replacement === "string" ? s.replacement : "▁", " "]];
    return [];
  });
  const knownMapping = byteLevel || byteFallback || replacements.length > 0;

  return (id) => {
    const token = source.tokenOf(id);
    if (token === undefined) return new Uint8Array(0);
    if (source.isAdded(id)) return utf8.encode(token);
    if (!knownMapping) return utf8.encode(source.decodeAlone(id));
    if (byteLevel) {
      const chars = [...token];
      if (chars.every((c) => UNICODE_TO_BYTE.has(c)))
        return Uint8Array.from(chars, (c) => UNICODE_TO_BYTE.get(c)!);
      return utf8.encode(token);
    }
    const fallback = byteFallback ? BYTE_FALLBACK_TOKEN.exec(token) : null;
    if (fallback) return Uint8Array.of(Number.parseInt(fallback[1]!, 16));
    let text = token;
    for (const [from, to] of replacements) text = text.split(from).join(to);
    return utf8.encode(text);
  };
}

interface DecoderStep {
  type?: unknown;
  pattern?: { String?: unknown };
  content?: unknown;
  replacement?: unknown;
}

function decoderSteps(decoder: unknown): DecoderStep[] {
  if (typeof decoder !== "object" || decoder === null) return [];
  const step = decoder as DecoderStep & { decoders?: unknown };
  if (step.type === "Sequence" && Array.isArray(step.decoders)) return step.decoders.flatMap(decoderSteps);
  return [step];
}

const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * A token's text for logprobs: its bytes as a string where they are whole UTF-8, else OpenAI's
 * "bytes:" form with every byte written as \xNN (a token that starts or ends inside a character).
 */
export function tokenText(bytes: Uint8Array): string {
  try {
    return strictUtf8.decode(bytes);
  } catch {
    return `bytes:${Array.from(bytes, (b) => `\\x${b.toString(16).padStart(2, "0")}`).join("")}`;
  }
}
