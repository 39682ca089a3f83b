// OpenAI's JSON mode (`response_format: {"type": "json_object"}`) as a byte-level grammar: which bytes may
// come next so that the output is one JSON object (RFC 8259) and nothing after it. A sequence in JSON mode
// masks every token whose bytes this grammar would refuse before it samples (json-mode-mask.ts), and ends
// when the object closes. The state is a few fields and the stack of open containers as a string, so a
// candidate token is tried on a copy without touching the real state.

/** Most whitespace bytes in a row: enough to indent pretty-printed JSON, not to spin forever on blanks. */
export const MAX_WHITESPACE_RUN = 16;

type Mode =
  /** Before the top-level object: only "{". */
  | "start"
  /** A value: an object, array, string, number or literal. */
  | "value"
  /** Just after "[": a value or "]". */
  | "value-or-close"
  /** Just after "{": a key or "}". */
  | "key-or-close"
  /** After "," in an object: a key. */
  | "key"
  /** After a key: ":". */
  | "colon"
  /** After a value inside a container: "," or its closing bracket. */
  | "after-value"
  | "string"
  | "number"
  /** Inside true, false or null: `literal` holds the bytes still to come. */
  | "literal"
  /** The top-level object closed: nothing more. */
  | "done";

/** Where a number is: each state says what it has read so far. */
type NumberState = "minus" | "zero" | "int" | "dot" | "frac" | "e" | "e-sign" | "exp";

interface State {
  mode: Mode;
  /** Open containers, innermost last: "o" object, "a" array. */
  stack: string;
  /** In a string: whether it is an object key (a ":" follows it). */
  key: boolean;
  /** In a string: 0 normal, 1 after a backslash, 2–5 hex digits of \uXXXX still to read (5 = four left). */
  escape: number;
  /** In a string: UTF-8 continuation bytes still to read. */
  continuation: number;
  number: NumberState;
  literal: string;
  /** Whitespace bytes in a row so far. */
  blanks: number;
}

const isWhitespace = (b: number) => b === 0x20 || b === 0x0a || b === 0x0d || b === 0x09;
const isDigit = (b: number) => b >= 0x30 && b <= 0x39;
const isHex = (b: number) => isDigit(b) || (b >= 0x41 && b <= 0x46) || (b >= 0x61 && b <= 0x66);
const LITERALS: Record<number, string> = { 116: "rue", 102: "alse", 110: "ull" };

export class JsonObjectGrammar {
  private state: State = {
    mode: "start",
    stack: "",
    key: false,
    escape: 0,
    continuation: 0,
    number: "zero",
    literal: "",
    blanks: 0,
  };

  /** The top-level object has closed: the output is complete. */
  get complete(): boolean {
    return this.state.mode === "done";
  }

  /** Whether these bytes may come next; the state does not change. */
  accepts(bytes: Uint8Array): boolean {
    if (bytes.length === 0) return false;
    const trial = { ...this.state };
    for (const b of bytes) if (!step(trial, b)) return false;
    return true;
  }

  /** Takes bytes that accepts() allowed; throws on bytes it would refuse, leaving the state unchanged. */
  push(bytes: Uint8Array): void {
    const next = { ...this.state };
    for (const b of bytes) {
      if (!step(next, b))
        throw new RangeError(`byte 0x${b.toString(16)} cannot continue the JSON object here`);
    }
    this.state = next;
  }
}

/** Advances `s` by one byte; false (s then undefined) when the byte cannot come next. */
function step(s: State, b: number): boolean {
  switch (s.mode) {
    case "done":
      return false;
    case "start":
      if (b !== 0x7b) return false;
      return open(s, "o");
    case "string":
      return inString(s, b);
    case "literal":
      if (b !== s.literal.charCodeAt(0)) return false;
      s.literal = s.literal.slice(1);
      if (s.literal === "") afterValue(s);
      return true;
    case "number":
      if (inNumber(s, b)) return true;
      if (!numberMayEnd(s.number)) return false;
      afterValue(s);
      return step(s, b);
    default:
      break;
  }
  if (isWhitespace(b)) {
    if (s.blanks >= MAX_WHITESPACE_RUN) return false;
    s.blanks++;
    return true;
  }
  s.blanks = 0;
  switch (s.mode) {
    case "value-or-close":
      if (b === 0x5d) return close(s, "a");
      return startValue(s, b);
    case "value":
      return startValue(s, b);
    case "key-or-close":
      if (b === 0x7d) return close(s, "o");
      return startKey(s, b);
    case "key":
      return startKey(s, b);
    case "colon":
      if (b !== 0x3a) return false;
      s.mode = "value";
      return true;
    case "after-value": {
      const inner = s.stack.at(-1);
      if (b === 0x2c) {
        s.mode = inner === "o" ? "key" : "value";
        return true;
      }
      if (b === 0x7d && inner === "o") return close(s, "o");
      if (b === 0x5d && inner === "a") return close(s, "a");
      return false;
    }
    default:
      return false;
  }
}

function open(s: State, container: "o" | "a"): boolean {
  s.stack += container;
  s.mode = container === "o" ? "key-or-close" : "value-or-close";
  s.blanks = 0;
  return true;
}

function close(s: State, container: "o" | "a"): boolean {
  if (s.stack.at(-1) !== container) return false;
  s.stack = s.stack.slice(0, -1);
  afterValue(s);
  return true;
}

/** A value just ended: the container it is in goes on, or the top-level object is complete. */
function afterValue(s: State): void {
  s.mode = s.stack === "" ? "done" : "after-value";
  s.blanks = 0;
}

function startKey(s: State, b: number): boolean {
  if (b !== 0x22) return false;
  s.mode = "string";
  s.key = true;
  return true;
}

function startValue(s: State, b: number): boolean {
  if (b === 0x7b) return open(s, "o");
  if (b === 0x5b) return open(s, "a");
  if (b === 0x22) {
    s.mode = "string";
    s.key = false;
    return true;
  }
  if (b === 0x2d || isDigit(b)) {
    s.mode = "number";
    s.number = b === 0x2d ? "minus" : b === 0x30 ? "zero" : "int";
    return true;
  }
  const literal = LITERALS[b];
  if (literal === undefined) return false;
  s.mode = "literal";
  s.literal = literal;
  return true;
}

function inString(s: State, b: number): boolean {
  if (s.continuation > 0) {
    if (b < 0x80 || b > 0xbf) return false;
    s.continuation--;
    return true;
  }
  if (s.escape === 1) {
    if (b === 0x75) {
      s.escape = 5;
      return true;
    }
    // " \ / b f n r t
    if (![0x22, 0x5c, 0x2f, 0x62, 0x66, 0x6e, 0x72, 0x74].includes(b)) return false;
    s.escape = 0;
    return true;
  }
  if (s.escape > 1) {
    if (!isHex(b)) return false;
    s.escape = s.escape === 2 ? 0 : s.escape - 1;
    return true;
  }
  if (b === 0x22) {
    if (s.key) s.mode = "colon";
    else afterValue(s);
    s.blanks = 0;
    return true;
  }
  if (b === 0x5c) {
    s.escape = 1;
    return true;
  }
  if (b < 0x20 || b === 0x7f) return false;
  if (b < 0x80) return true;
  // A UTF-8 lead byte and how many continuation bytes follow it (no overlong two-byte forms, nothing past U+10FFFF).
  if (b >= 0xc2 && b <= 0xdf) s.continuation = 1;
  else if (b >= 0xe0 && b <= 0xef) s.continuation = 2;
  else if (b >= 0xf0 && b <= 0xf4) s.continuation = 3;
  else return false;
  return true;
}

function inNumber(s: State, b: number): boolean {
  const digit = isDigit(b);
  switch (s.number) {
    case "minus":
      if (!digit) return false;
      s.number = b === 0x30 ? "zero" : "int";
      return true;
    case "zero":
    case "int":
      if (digit && s.number === "int") return true;
      if (b === 0x2e) s.number = "dot";
      else if (b === 0x65 || b === 0x45) s.number = "e";
      else return false;
      return true;
    case "dot":
      if (!digit) return false;
      s.number = "frac";
      return true;
    case "frac":
      if (digit) return true;
      if (b !== 0x65 && b !== 0x45) return false;
      s.number = "e";
      return true;
    case "e":
      if (b === 0x2b || b === 0x2d) s.number = "e-sign";
      else if (digit) s.number = "exp";
      else return false;
      return true;
    case "e-sign":
      if (!digit) return false;
      s.number = "exp";
      return true;
    case "exp":
      return digit;
  }
}

/** Whether a number may end in this state (it has all the digits its parts need). */
function numberMayEnd(state: NumberState): boolean {
  return state === "zero" || state === "int" || state === "frac" || state === "exp";
}
