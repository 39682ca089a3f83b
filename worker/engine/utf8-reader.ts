// Tokens are bytes, and a byte-level vocabulary splits a multi-byte character across tokens, so the
// structured-output masks that read characters (regex-mode.ts, grammar-mode.ts) read a token's bytes one at
// a time: a whole character, or a character still being read and the code points it may still become.

/** A character being read: the continuation bytes it still needs (0 between characters), its bits so far,
 * and the least code point its length may encode (UTF-8 refuses longer forms of smaller ones). */
export interface PartialCharacter {
  need: number;
  bits: number;
  least: number;
}

export const BETWEEN_CHARACTERS: PartialCharacter = { need: 0, bits: 0, least: 0 };

/** What one more byte makes: a whole character, a character still being read, or null (not UTF-8). */
export type ByteRead = { code: number } | { partial: PartialCharacter; first: number; last: number } | null;

/** Reads byte `b` after `at`. A partial character comes with the range of code points it may become. */
export function readByte(at: PartialCharacter, b: number): ByteRead {
  let partial: PartialCharacter;
  if (at.need === 0) {
    if (b < 0x80) return { code: b };
    // A lead byte: the character's length, its first bits, and the least code point that length holds.
    if (b >= 0xc2 && b <= 0xdf) partial = { need: 1, bits: b & 0x1f, least: 0x80 };
    else if (b >= 0xe0 && b <= 0xef) partial = { need: 2, bits: b & 0x0f, least: 0x800 };
    else if (b >= 0xf0 && b <= 0xf4) partial = { need: 3, bits: b & 0x07, least: 0x10000 };
    else return null;
  } else {
    if (b < 0x80 || b > 0xbf) return null;
    const bits = (at.bits << 6) | (b & 0x3f);
    if (at.need === 1) return bits < at.least ? null : { code: bits };
    partial = { need: at.need - 1, bits, least: at.least };
  }
  const shift = 6 * partial.need;
  const first = Math.max(partial.bits << shift, partial.least);
  const last = Math.min((partial.bits << shift) | ((1 << shift) - 1), 0x10ffff);
  return first > last ? null : { partial, first, last };
}

/**
 * The characters an output may hold, as [first, last] pairs: no surrogates, no DEL, and of the C0 controls
 * only backspace, tab, line feed, form feed and carriage return (those a JSON string writes with a short
 * escape, so a patterned JSON string holds the same).
 */
export const WRITABLE: readonly number[] = [
  0x08, 0x0a, 0x0c, 0x0d, 0x20, 0x7e, 0x80, 0xd7ff, 0xe000, 0x10ffff,
];

/** Whether an output may hold the character (WRITABLE). */
export function writable(c: number): boolean {
  for (let i = 0; i < WRITABLE.length; i += 2) {
    if (c < WRITABLE[i]!) return false;
    if (c <= WRITABLE[i + 1]!) return true;
  }
  return false;
}
