// Structured output as a byte-level grammar: which bytes may come next so that the output is one JSON value
// of a schema (json-schema.ts; JSON mode is ANY_OBJECT) and nothing after it. A sequence masks every token
// whose bytes this grammar would refuse before it samples (json-mode.ts), and ends when the value is
// complete. A parse is a stack of frames, innermost last; where a schema offers alternatives (anyOf, type
// lists) the grammar follows each as its own parse until the bytes rule it out. Trying bytes copies the
// parses once (a few small frames each) and then changes the copies in place, byte after byte: a mask
// tries every token of the vocabulary each step.
import { ANY_OBJECT, type PropertyNode, type SchemaNode } from "./json-schema.ts";
import {
  fewestCharsToEnd,
  MAX_DIGITS,
  type NumberRange,
  numberPrefixFeasible,
  numberWithin,
} from "./number-range.ts";
import { pairBytes, requiredFrom, shortestValue } from "./shortest-value.ts";
import { lengthFits, nextState, type StringAutomaton, someMoveInRange } from "./string-automaton.ts";

/**
 * Most whitespace bytes in a row: one, as Outlines allows, so a model cannot spend its tokens on blanks (a
 * known failure of JSON modes); the output is compact JSON, a space or a line break between its tokens.
 */
export const MAX_WHITESPACE_RUN = 1;

/**
 * Most parses followed at once. Alternatives that begin alike (nested anyOf) multiply; past this many the
 * rest are dropped, which only narrows what may come (every kept parse can still complete).
 */
export const MAX_PARSES = 32;

type ObjectNode = Extract<SchemaNode, { kind: "object" }>;
type ArrayNode = Extract<SchemaNode, { kind: "array" }>;

/** What a parse is in the middle of. */
type Frame =
  /** A value of `node` comes next. */
  | { t: "value"; node: SchemaNode }
  /**
   * Inside an object. open: after "{"; key: after ","; colon: after a key; value: the key's value is being
   * read; after: after a value. `next` is the first property that may still come (keys go in order);
   * `pending` the schema of the value after the colon.
   */
  | {
      t: "object";
      node: ObjectNode;
      phase: "open" | "key" | "colon" | "value" | "after";
      next: number;
      pending: SchemaNode | null;
    }
  /** A key among `candidates` (property indexes), `matched` bytes of it read (its opening quote first). */
  | { t: "key"; candidates: number[]; matched: number }
  | { t: "array"; node: ArrayNode; phase: "open" | "value" | "after" | "comma"; items: number }
  /**
   * A string, after its opening quote: `chars` characters so far; `escape` 0 none, 1 after "\", 2–5 hex
   * digits of \uXXXX still to read (5 = four left); `continuation` UTF-8 bytes still to read, `lead` the
   * lead byte until the first of them is read (it narrows that byte's range).
   */
  | {
      t: "string";
      min: number;
      max: number;
      chars: number;
      escape: number;
      continuation: number;
      lead: number;
      key: boolean;
      /** Which string this is (stringFrame); copies of a parse keep it. */
      serial: number;
      /** The string's pattern (string-automaton.ts) and its state there; null without one. */
      pattern: StringAutomaton | null;
      state: number;
      /** The bits of the character being read, while its UTF-8 bytes come in. */
      code: number;
    }
  /**
   * A number: where it is, and the digits of its current part; with a range (number-range.ts), its text so
   * far, which the range must still be able to complete.
   */
  | {
      t: "number";
      integer: boolean;
      state: NumberState;
      digits: number;
      range: NumberRange | null;
      text: string;
    }
  /** One of `values` exactly, `matched` bytes read. */
  | { t: "literal"; values: Uint8Array[]; matched: number };

type NumberState = "minus" | "zero" | "int" | "dot" | "frac" | "e" | "e-sign" | "exp";

interface Parse {
  frames: Frame[];
  /** Whitespace bytes in a row so far. */
  blanks: number;
}

type ObjectFrame = Extract<Frame, { t: "object" }>;
type ArrayFrame = Extract<Frame, { t: "array" }>;
type StringFrame = Extract<Frame, { t: "string" }>;
type KeyFrame = Extract<Frame, { t: "key" }>;

const ANY_VALUE: SchemaNode = { kind: "any" };
const ANY_ARRAY: ArrayNode = {
  kind: "array",
  items: ANY_VALUE,
  minItems: 0,
  maxItems: Number.POSITIVE_INFINITY,
};
const ANY_LITERALS = ["true", "false", "null"].map((text) => new TextEncoder().encode(text));

const isWhitespace = (b: number) => b === 0x20 || b === 0x0a || b === 0x0d || b === 0x09;
const isDigit = (b: number) => b >= 0x30 && b <= 0x39;
const isHex = (b: number) => isDigit(b) || (b >= 0x41 && b <= 0x46) || (b >= 0x61 && b <= 0x66);

export class JsonGrammar {
  private parses: Parse[];

  /** The root must be an object schema (or a union of them), as compileJsonSchema ensures. */
  constructor(root: SchemaNode = ANY_OBJECT) {
    this.parses = [{ frames: [{ t: "value", node: root }], blanks: 0 }];
  }

  /** The value is complete: nothing may follow. */
  get complete(): boolean {
    return this.parses.some((p) => p.frames.length === 0);
  }

  /**
   * While the only parse is inside a string whose length no longer limits it (its minLength reached, no
   * maxLength), where it stands: the string's serial and its pattern state (0 without a pattern). The tokens
   * that may come are the same whenever these are, whatever was written before. Else null.
   */
  get openString(): { serial: number; state: number } | null {
    if (this.parses.length !== 1) return null;
    const top = this.parses[0]!.frames.at(-1);
    if (top?.t !== "string" || top.escape !== 0 || top.continuation !== 0) return null;
    if (top.chars < top.min || top.max !== Number.POSITIVE_INFINITY) return null;
    return { serial: top.serial, state: top.state };
  }

  /** While the only parse is inside a patterned string between characters, where it stands; else null. */
  get patternCursor(): PatternCursor | null {
    if (this.parses.length !== 1) return null;
    const top = this.parses[0]!.frames.at(-1);
    if (top?.t !== "string" || !top.pattern || top.escape !== 0 || top.continuation !== 0) return null;
    return { automaton: top.pattern, state: top.state, chars: top.chars, min: top.min, max: top.max };
  }

  /**
   * How many plain characters (printable ASCII but `"` and `\`) a string being written may take now: what a
   * token of only such bytes needs to be accepted. 0 outside a string and in a patterned one, where which
   * characters may come depends on the pattern.
   */
  get plainStringRoom(): number {
    let room = 0;
    for (const { frames } of this.parses) {
      const top = frames.at(-1);
      if (top?.t === "string" && top.escape === 0 && top.continuation === 0 && !top.pattern) {
        room = Math.max(room, top.max - top.chars);
      }
    }
    return room;
  }

  /**
   * The fewest bytes that complete the value from here (0 once it is complete): compact, no blanks. Exact
   * where every character a pattern still needs is one byte; Infinity when nothing can complete it.
   */
  get fewestBytesToEnd(): number {
    let fewest = Number.POSITIVE_INFINITY;
    for (const parse of this.parses) fewest = Math.min(fewest, bytesToEnd(parse));
    return fewest;
  }

  /** The most fewestBytesToEnd of any one parse (the same with one parse). */
  get fewestBytesToEndAtWorst(): number {
    let most = 0;
    for (const parse of this.parses) most = Math.max(most, bytesToEnd(parse));
    return most;
  }

  /**
   * While the only parse is inside a string with no pattern, between characters: how many characters it
   * still lacks to reach its minLength. Else null.
   */
  get plainStringShortfall(): number | null {
    if (this.parses.length !== 1) return null;
    const top = this.parses[0]!.frames.at(-1);
    if (top?.t !== "string" || top.pattern || top.escape !== 0 || top.continuation !== 0) return null;
    return Math.max(0, top.min - top.chars);
  }

  /** The grammar after these bytes (this one unchanged), or null when they cannot come next. */
  after(bytes: Uint8Array): JsonGrammar | null {
    const next = advance(this.parses, bytes);
    if (next.length === 0) return null;
    const grammar = new JsonGrammar();
    grammar.parses = next;
    return grammar;
  }

  /** Whether these bytes may come next; the state does not change. */
  accepts(bytes: Uint8Array): boolean {
    return bytes.length > 0 && advance(this.parses, bytes).length > 0;
  }

  /** Takes bytes that accepts() allowed; throws on bytes it would refuse, leaving the state unchanged. */
  push(bytes: Uint8Array): void {
    const next = advance(this.parses, bytes);
    if (next.length === 0) throw new RangeError("these bytes cannot continue the JSON value here");
    this.parses = next;
  }
}

/** A patterned string between characters: its automaton, state, characters so far and length limits. */
export interface PatternCursor {
  automaton: StringAutomaton;
  state: number;
  chars: number;
  min: number;
  max: number;
}

/** The fewest bytes that complete the parse: each open frame's rest, innermost first. */
function bytesToEnd(parse: Parse): number {
  const { frames } = parse;
  let total = 0;
  for (let i = frames.length - 1; i >= 0; i--) {
    const frame = frames[i]!;
    if (frame.t === "key") {
      // The key picks the property, and so what its object still needs: the key frame and its object are
      // counted together.
      const object = frames[--i] as ObjectFrame;
      const properties = object.node.properties!;
      let fewest = Number.POSITIVE_INFINITY;
      for (const c of frame.candidates) {
        const rest = pairBytes(properties[c]!) - frame.matched + objectRest(object.node, c + 1, "after");
        fewest = Math.min(fewest, rest);
      }
      total += fewest;
    } else total += frameRest(frame);
  }
  return total;
}

/** The fewest bytes that end a frame (not a key frame) from where it stands, its holders aside. */
function frameRest(frame: Frame): number {
  switch (frame.t) {
    case "value":
      return shortestValue(frame.node);
    case "object":
      if (frame.node.properties === null) {
        // Any keys: `"":0}` where a key must come, `:0}` after one, `}` otherwise.
        if (frame.phase === "key") return 5;
        return frame.phase === "colon" ? 3 : 1;
      }
      if (frame.phase === "colon") {
        return 1 + shortestValue(frame.pending ?? ANY_VALUE) + objectRest(frame.node, frame.next, "after");
      }
      return objectRest(frame.node, frame.next, frame.phase === "value" ? "after" : frame.phase);
    case "array": {
      const { node, items, phase } = frame;
      const item = shortestValue(node.items);
      if (phase === "open") return node.minItems === 0 ? 1 : node.minItems * (item + 1);
      // Done with minItems: only the bracket (0 × an item that cannot be written would be NaN below).
      if (phase !== "comma" && items >= node.minItems) return 1;
      // After a comma one more item must come (items counts it once it starts); after an item, only the
      // ones minItems still asks for, each after a comma.
      if (phase === "comma") return item + Math.max(0, node.minItems - items - 1) * (item + 1) + 1;
      return Math.max(0, node.minItems - items) * (item + 1) + 1;
    }
    case "string": {
      // The character being read, then the characters the string still needs, then its closing quote.
      const pending = frame.escape === 1 ? 1 : frame.escape > 1 ? frame.escape - 1 : frame.continuation;
      let chars = Math.max(0, frame.min - frame.chars);
      if (frame.pattern) {
        const pattern = frame.pattern.minRemaining[frame.state]! - (pending > 0 ? 1 : 0);
        chars = Math.max(chars, pattern);
      }
      return pending + chars + 1;
    }
    case "number":
      if (numberMayEnd(frame)) return 0;
      return frame.range ? fewestCharsToEnd(frame.range, frame.text) : 1;
    case "literal":
      return Math.min(...frame.values.map((v) => v.length - frame.matched));
    case "key":
      throw new Error("a key frame is counted with its object");
  }
}

/**
 * The fewest bytes that end an object whose next property may be `from`: after a value (a comma before
 * each required property left), where a key must come (after a comma: at least one property), or open.
 */
function objectRest(node: ObjectNode, from: number, phase: "open" | "key" | "after"): number {
  const { count, bytes } = requiredFrom(node, from);
  if (phase === "after") return bytes + count + 1;
  if (count > 0) return bytes + count;
  if (phase === "open") return 1;
  // After a comma with no required property left: the cheapest optional one.
  const optional = node.properties!.slice(from).map(pairBytes);
  return Math.min(...optional) + 1;
}

/** A copy of a parse that may be changed in place without touching the original. */
function copy(parse: Parse): Parse {
  return { frames: parse.frames.map((frame) => ({ ...frame })), blanks: parse.blanks };
}

function advance(parses: readonly Parse[], bytes: Uint8Array): Parse[] {
  let current = parses.map(copy);
  for (const b of bytes) {
    const next: Parse[] = [];
    for (const parse of current) step(parse, b, next);
    if (next.length === 0) return next;
    if (next.length > MAX_PARSES) next.length = MAX_PARSES;
    current = next;
  }
  return current;
}

/** Moves `parse` (changed in place) past byte `b` onto `out`, with any alternatives; nothing when `b` cannot come. */
function step(parse: Parse, b: number, out: Parse[]): void {
  const { frames } = parse;
  const top = frames.at(-1);
  if (!top) return;
  switch (top.t) {
    case "string":
      if (stringByte(parse, top, b)) out.push(parse);
      return;
    case "key":
      if (keyByte(parse, top, b)) out.push(parse);
      return;
    case "number": {
      const state = numberByte(top, b);
      if (state) {
        top.digits = !isDigit(b) ? 0 : state === top.state ? top.digits + 1 : 1;
        top.state = state;
        if (top.range) top.text += String.fromCharCode(b);
        out.push(parse);
        return;
      }
      // Not part of the number: it ends if it may, and the byte goes to what holds it.
      if (!numberMayEnd(top)) return;
      endValue(parse);
      step(parse, b, out);
      return;
    }
    case "literal": {
      const values = top.values.filter((v) => v[top.matched] === b);
      if (values.length > 0) {
        top.values = values;
        top.matched++;
        out.push(parse);
        return;
      }
      if (!top.values.some((v) => v.length === top.matched)) return;
      endValue(parse);
      step(parse, b, out);
      return;
    }
    default:
      break;
  }
  if (isWhitespace(b)) {
    // Nothing before the root value (nor after it: no frame is left then).
    if (parse.blanks >= MAX_WHITESPACE_RUN || (top.t === "value" && frames.length === 1)) return;
    parse.blanks++;
    out.push(parse);
    return;
  }
  parse.blanks = 0;
  switch (top.t) {
    case "value":
      frames.pop();
      startValue(parse, top.node, b, out);
      return;
    case "object":
      if (objectByte(parse, top, b)) out.push(parse);
      return;
    case "array":
      arrayByte(parse, top, b, out);
      return;
  }
}

/** The value on top ended: it leaves, and what holds it moves past it (none left: the root is complete). */
function endValue(parse: Parse): void {
  parse.frames.pop();
  parse.blanks = 0;
  const holder = parse.frames.at(-1);
  if (holder?.t === "object") {
    holder.phase = "after";
    holder.pending = null;
  } else if (holder?.t === "array") holder.phase = "after";
}

/** A value of `node` starts with byte `b` (its value frame already popped). */
function startValue(parse: Parse, node: SchemaNode, b: number, out: Parse[]): void {
  const start = (frame: Frame | null) => {
    if (!frame) return;
    parse.frames.push(frame);
    out.push(parse);
  };
  switch (node.kind) {
    case "union":
      for (const option of node.options) startValue(copy(parse), option, b, out);
      return;
    case "any":
      if (b === 0x7b) start(openObject(ANY_OBJECT as ObjectNode));
      else if (b === 0x5b) start({ t: "array", node: ANY_ARRAY, phase: "open", items: 0 });
      else if (b === 0x22) start(stringFrame(0, Number.POSITIVE_INFINITY, false));
      else if (b === 0x2d || isDigit(b)) start(startNumber(false, null, b));
      else start(startLiteral(ANY_LITERALS, b));
      return;
    case "object":
      start(b === 0x7b ? openObject(node) : null);
      return;
    case "array":
      start(b === 0x5b ? { t: "array", node, phase: "open", items: 0 } : null);
      return;
    case "string":
      start(b === 0x22 ? stringFrame(node.minLength, node.maxLength, false, node.pattern) : null);
      return;
    case "number":
      start(b === 0x2d || isDigit(b) ? startNumber(node.integer, node.range, b) : null);
      return;
    case "literals":
      start(startLiteral(node.values, b));
      return;
  }
}

/** Numbers each string a grammar opens, so a mask can tell the string it was made in (openString). */
let stringSerials = 0;

function stringFrame(min: number, max: number, key: boolean, pattern: StringAutomaton | null = null): Frame {
  return {
    t: "string",
    min,
    max,
    chars: 0,
    escape: 0,
    continuation: 0,
    lead: 0,
    key,
    serial: ++stringSerials,
    pattern,
    state: 0,
    code: 0,
  };
}

function startLiteral(values: Uint8Array[], b: number): Frame | null {
  const matching = values.filter((v) => v[0] === b);
  return matching.length > 0 ? { t: "literal", values: matching, matched: 1 } : null;
}

function openObject(node: ObjectNode): Frame {
  return { t: "object", node, phase: "open", next: 0, pending: null };
}

/** The property indexes a key may name now: from `next` up to and including the first required one. */
function keyCandidates(properties: readonly PropertyNode[], next: number): number[] {
  const candidates: number[] = [];
  for (let i = next; i < properties.length; i++) {
    candidates.push(i);
    if (properties[i]!.required) break;
  }
  return candidates;
}

/** Whether the object may close now: no required property left. */
function mayClose(frame: ObjectFrame): boolean {
  const properties = frame.node.properties;
  return properties === null || properties.slice(frame.next).every((p) => !p.required);
}

function objectByte(parse: Parse, frame: ObjectFrame, b: number): boolean {
  const properties = frame.node.properties;
  switch (frame.phase) {
    case "open":
    case "key": {
      if (b === 0x7d && frame.phase === "open" && mayClose(frame)) {
        endValue(parse);
        return true;
      }
      if (b !== 0x22) return false;
      if (properties === null) {
        frame.phase = "colon";
        frame.pending = ANY_VALUE;
        parse.frames.push(stringFrame(0, Number.POSITIVE_INFINITY, true));
        return true;
      }
      const candidates = keyCandidates(properties, frame.next);
      if (candidates.length === 0) return false;
      parse.frames.push({ t: "key", candidates, matched: 1 });
      return true;
    }
    case "colon":
      if (b !== 0x3a) return false;
      frame.phase = "value";
      parse.frames.push({ t: "value", node: frame.pending ?? ANY_VALUE });
      return true;
    case "after":
      if (b === 0x7d && mayClose(frame)) {
        endValue(parse);
        return true;
      }
      if (b !== 0x2c) return false;
      if (properties !== null && keyCandidates(properties, frame.next).length === 0) return false;
      frame.phase = "key";
      return true;
    default:
      // "value": the value's own frame is on top, never the object.
      return false;
  }
}

function keyByte(parse: Parse, frame: KeyFrame, b: number): boolean {
  const object = parse.frames.at(-2) as ObjectFrame;
  const properties = object.node.properties!;
  const candidates = frame.candidates.filter((i) => properties[i]!.key[frame.matched] === b);
  if (candidates.length === 0) return false;
  frame.candidates = candidates;
  frame.matched++;
  // The closing quote is a key's last byte, so no key is a prefix of another: one match is the key.
  const whole = candidates.find((i) => properties[i]!.key.length === frame.matched);
  if (whole !== undefined) {
    parse.frames.pop();
    object.phase = "colon";
    object.next = whole + 1;
    object.pending = properties[whole]!.value;
  }
  return true;
}

function arrayByte(parse: Parse, frame: ArrayFrame, b: number, out: Parse[]): void {
  const { node } = frame;
  const close = () => {
    if (frame.items < node.minItems) return;
    endValue(parse);
    out.push(parse);
  };
  switch (frame.phase) {
    case "open":
      if (b === 0x5d) close();
      else if (node.maxItems > 0) {
        frame.phase = "value";
        frame.items = 1;
        startValue(parse, node.items, b, out);
      }
      return;
    case "comma":
      frame.phase = "value";
      frame.items++;
      startValue(parse, node.items, b, out);
      return;
    case "after":
      if (b === 0x5d) close();
      else if (b === 0x2c && frame.items < node.maxItems) {
        frame.phase = "comma";
        out.push(parse);
      }
      return;
    default:
      // "value": the item's own frame is on top, never the array.
      return;
  }
}

function stringByte(parse: Parse, s: StringFrame, b: number): boolean {
  if (s.continuation > 0) {
    // Well-formed UTF-8 (RFC 3629): no overlong three- or four-byte forms, no surrogates, nothing past
    // U+10FFFF; a decoder would write U+FFFD for any of them.
    const lo = s.lead === 0xe0 ? 0xa0 : s.lead === 0xf0 ? 0x90 : 0x80;
    const hi = s.lead === 0xed ? 0x9f : s.lead === 0xf4 ? 0x8f : 0xbf;
    if (b < lo || b > hi) return false;
    s.lead = 0;
    s.continuation--;
    if (s.pattern) {
      s.code = (s.code << 6) | (b & 0x3f);
      if (s.continuation === 0) return patternChar(s, s.code);
      return patternMayTake(s, s.code << (6 * s.continuation), ((s.code + 1) << (6 * s.continuation)) - 1);
    }
    return true;
  }
  if (s.escape === 1) {
    if (s.pattern) {
      const char = SHORT_ESCAPES.get(b);
      if (char === undefined) return false;
      s.escape = 0;
      return patternChar(s, char);
    }
    if (b === 0x75) s.escape = 5;
    // " \ / b f n r t
    else if (SHORT_ESCAPES.has(b)) s.escape = 0;
    else return false;
    return true;
  }
  if (s.escape > 1) {
    if (!isHex(b)) return false;
    s.escape = s.escape === 2 ? 0 : s.escape - 1;
    return true;
  }
  if (b === 0x22) {
    if (s.chars < s.min || (s.pattern && s.pattern.accepting[s.state] !== 1)) return false;
    // A key's object is waiting for its colon already; a value's holder moves past it.
    if (s.key) parse.frames.pop();
    else endValue(parse);
    return true;
  }
  // Every other byte starts a character.
  if (s.chars >= s.max) return false;
  if (b === 0x5c) s.escape = 1;
  else if (b < 0x20 || b === 0x7f) return false;
  // A UTF-8 lead byte and how many continuation bytes follow it (no overlong two-byte forms, nothing past
  // U+10FFFF).
  else if (b >= 0xc2 && b <= 0xdf) s.continuation = 1;
  else if (b >= 0xe0 && b <= 0xef) s.continuation = 2;
  else if (b >= 0xf0 && b <= 0xf4) s.continuation = 3;
  else if (b >= 0x80) return false;
  if (b >= 0x80) s.lead = b;
  s.chars++;
  if (!s.pattern) return true;
  if (b === 0x5c) {
    // Only the short escapes are written in a patterned string: one must be a character the pattern takes.
    for (const char of SHORT_ESCAPES.values()) if (patternMayTake(s, char, char)) return true;
    return false;
  }
  if (b < 0x80) return patternChar(s, b);
  // The lead byte's bits, and the code points its character can still be.
  const bits = s.continuation === 1 ? 0x1f : s.continuation === 2 ? 0x0f : 0x07;
  s.code = b & bits;
  const shift = 6 * s.continuation;
  const least = s.continuation === 1 ? 0x80 : s.continuation === 2 ? 0x800 : 0x10000;
  return patternMayTake(s, Math.max(least, s.code << shift), ((s.code + 1) << shift) - 1);
}

/** Each short escape's letter (after "\\") and the character it writes. */
const SHORT_ESCAPES = new Map([
  [0x22, 0x22],
  [0x5c, 0x5c],
  [0x2f, 0x2f],
  [0x62, 0x08],
  [0x66, 0x0c],
  [0x6e, 0x0a],
  [0x72, 0x0d],
  [0x74, 0x09],
]);

/** Whether the patterned string, its current character counted, can still end well from `state`. */
function patternFits(s: StringFrame, state: number): boolean {
  return lengthFits(s.pattern!, state, s.chars, s.min, s.max);
}

/** Moves the patterned string past its character `c` (already counted); false when it cannot come. */
function patternChar(s: StringFrame, c: number): boolean {
  const next = nextState(s.pattern!, s.state, c);
  if (next < 0 || !patternFits(s, next)) return false;
  s.state = next;
  return true;
}

/** Whether some character from lo to hi (the one being read, counted already) can come next. */
function patternMayTake(s: StringFrame, lo: number, hi: number): boolean {
  return someMoveInRange(s.pattern!, s.state, lo, hi, (target) => patternFits(s, target));
}

function startNumber(integer: boolean, range: NumberRange | null, b: number): Frame | null {
  const state = b === 0x2d ? "minus" : b === 0x30 ? "zero" : "int";
  const text = String.fromCharCode(b);
  if (range && !numberPrefixFeasible(range, text)) return null;
  return { t: "number", integer, state, digits: b === 0x2d ? 0 : 1, range, text: range ? text : "" };
}

type NumberFrame = Extract<Frame, { t: "number" }>;

/** The number's state after byte `b`, or null when `b` cannot continue it (or its range refuses what would follow). */
function numberByte(n: NumberFrame, b: number): NumberState | null {
  const state = numberSyntax(n, b);
  if (state && n.range && !numberPrefixFeasible(n.range, n.text + String.fromCharCode(b))) return null;
  return state;
}

/**
 * Most digits of an exponent: two keep every number a double can hold (at most 24 digits times 10^99),
 * where more wrote numbers such as 6E+329513 that every JSON parser reads as infinity.
 */
export const MAX_EXPONENT_DIGITS = 2;

function numberSyntax(n: NumberFrame, b: number): NumberState | null {
  const inExponent = n.state === "e" || n.state === "e-sign" || n.state === "exp";
  const digit = isDigit(b) && n.digits < (inExponent ? MAX_EXPONENT_DIGITS : MAX_DIGITS);
  // A range is checked on plain decimals: it turns exponents off.
  const exponent = (b === 0x65 || b === 0x45) && !n.integer && !n.range;
  switch (n.state) {
    case "minus":
      return digit ? (b === 0x30 ? "zero" : "int") : null;
    case "zero":
    case "int":
      if (digit) return n.state === "int" ? "int" : null;
      if (b === 0x2e && !n.integer) return "dot";
      return exponent ? "e" : null;
    case "dot":
      return digit ? "frac" : null;
    case "frac":
      if (digit) return "frac";
      return exponent ? "e" : null;
    case "e":
      if (b === 0x2b || b === 0x2d) return "e-sign";
      return digit ? "exp" : null;
    case "e-sign":
      return digit ? "exp" : null;
    case "exp":
      return digit ? "exp" : null;
  }
}

/** Whether the number may end here: it has all the digits its parts need, and its range takes its value. */
function numberMayEnd(n: NumberFrame): boolean {
  const complete = n.state === "zero" || n.state === "int" || n.state === "frac" || n.state === "exp";
  return complete && (!n.range || numberWithin(n.range, n.text));
}
