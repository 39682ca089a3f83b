// A streamed answer under tool_choice "auto", which may be calls or text (tool-calls.ts). Text goes out once
// it cannot be calls: it is held only while it is blank or begins like a call. Once a call's head is written
// — {"name": "<one of the tools>", "arguments": { — alone, in a list after Mistral's [TOOL_CALLS], or in
// Hermes and Qwen's <tool_call> tags, the answer is calls and streams as OpenAI streams them (as vLLM's tool
// parsers do): each call's id and name, then its arguments as they come, whitespace outside strings dropped
// (the unstreamed answer's arguments are compact JSON too), then the next call. A call in another form (its
// name after its arguments, its arguments as JSON text) is held and read whole at the end (toolCallsIn).
// Once a call has gone out the answer stays calls: text after the last call is dropped. With a custom tool
// or a strict function among those it may call, an answer that may be calls is read whole at the end
// (callsReadWhole): such a call counts only once its whole input, or arguments, is known to be valid.

import { JsonScanner } from "./json-scanner.ts";
import {
  CALL_OPENINGS,
  callsReadWhole,
  MISTRAL_CALLS,
  mayCall,
  TAGGED_CALL,
  TAGGED_CALL_END,
  type ToolCallDelta,
  type ToolPlan,
  toolCallsIn,
} from "./tool-calls.ts";

/** What a piece of the answer gives to send now: content, or pieces of calls (never both). */
export interface AutoCallOut {
  text: string;
  calls: ToolCallDelta[];
}

/** Out of text before the form is settled: wait for more. */
const MORE = -1;
/** Not the form looked for. */
const NO = -2;

const isSpace = (c: string | undefined) => c === " " || c === "\n" || c === "\r" || c === "\t";

function skipSpace(text: string, at: number): number {
  while (isSpace(text[at])) at++;
  return at;
}

/** Past `word` at `at`; MORE where the text ends inside it, NO where it differs. */
function literal(text: string, at: number, word: string): number {
  const there = text.slice(at, at + word.length);
  if (there === word) return at + word.length;
  return word.startsWith(there) ? MORE : NO;
}

/** Past `word` where it stands at `at`, else `at`; MORE where the text may still become it. */
function optional(text: string, at: number, word: string): number {
  const past = literal(text, at, word);
  return past === NO ? at : past;
}

/** A JSON string at `at`: its value and where it ends, or MORE / NO. */
function jsonString(text: string, at: number): { value: string; end: number } | number {
  if (at >= text.length) return MORE;
  if (text[at] !== '"') return NO;
  for (let i = at + 1; i < text.length; i++) {
    if (text[i] === "\\") i++;
    else if (text[i] === '"') {
      try {
        return { value: JSON.parse(text.slice(at, i + 1)) as string, end: i + 1 };
      } catch {
        return NO;
      }
    }
  }
  return MORE;
}

/**
 * A call's head at `at`: an optional <tool_call>, then {"name": NAME, "arguments": (or "parameters") up to
 * the arguments' opening brace. Its name and where the arguments begin, or MORE / NO.
 */
function callHead(text: string, at: number): { name: string; argumentsAt: number } | number {
  let i = optional(text, skipSpace(text, at), TAGGED_CALL);
  if (i < 0) return i;
  for (const word of ["{", '"name"', ":"]) {
    i = literal(text, skipSpace(text, i), word);
    if (i < 0) return i;
  }
  const name = jsonString(text, skipSpace(text, i));
  if (typeof name === "number") return name;
  i = literal(text, skipSpace(text, name.end), ",");
  if (i < 0) return i;
  i = skipSpace(text, i);
  const key = jsonString(text, i);
  if (typeof key === "number") return key;
  if (key.value !== "arguments" && key.value !== "parameters") return NO;
  i = literal(text, skipSpace(text, key.end), ":");
  if (i < 0) return i;
  i = skipSpace(text, i);
  if (i >= text.length) return MORE;
  return text[i] === "{" ? { name: name.value, argumentsAt: i } : NO;
}

type Phase =
  /** Before the first call: [TOOL_CALLS], a list's bracket. */
  | "start"
  | "head"
  /** Inside the arguments object, streamed. */
  | "arguments"
  /** After the arguments, up to the call object's own closing brace. */
  | "rest"
  /** After a call: </tool_call>, a list's comma, the next <tool_call>. */
  | "between"
  | "done";

export class AutoCallStream {
  private text = "";
  /** Unsettled: held while it may be calls; text: passing; calls: streaming; whole: read at the end. */
  private mode: "undecided" | "text" | "calls" | "whole" = "undecided";
  private phase: Phase = "start";
  /** Where the scan stands in `text`. */
  private at = 0;
  private inList = false;
  /** Calls whose heads went out before the current one (parallel_tool_calls false: at most one). */
  private begun = 0;
  /** Inside the arguments or the rest of a call: JSON nesting, and string state. */
  private readonly scanner = new JsonScanner();

  constructor(
    private readonly plan: ToolPlan,
    /** The first call's id; the others get `<id>_<k>`, as toolCallsIn numbers them. */
    private readonly id: string,
  ) {}

  push(piece: string): AutoCallOut {
    this.text += piece;
    if (this.mode === "text") return { text: piece, calls: [] };
    if (this.mode === "whole") return { text: "", calls: [] };
    if (this.mode === "undecided") {
      const start = this.text.trimStart();
      const mayBeCall = CALL_OPENINGS.some(
        (opening) => start.startsWith(opening) || opening.startsWith(start),
      );
      if (!mayBeCall) {
        this.mode = "text";
        return { text: this.text, calls: [] };
      }
      if (callsReadWhole(this.plan)) {
        this.mode = "whole";
        return { text: "", calls: [] };
      }
    }
    return { text: "", calls: this.scan() };
  }

  /**
   * At the end: the held text as content, or the calls' last pieces (whole calls for an answer read
   * whole); `cut`: the last streamed call never closed (max_tokens ended it).
   */
  end(): { text: string } | { calls: ToolCallDelta[]; cut: boolean } {
    if (this.mode === "calls") return { calls: [], cut: this.phase === "arguments" || this.phase === "rest" };
    if (this.mode === "text") return { text: "" };
    const calls = toolCallsIn(this.text, this.plan, this.id);
    if (!calls) return { text: this.text };
    return { calls: calls.map((call, index) => ({ index, ...call })), cut: false };
  }

  private get callId(): string {
    return this.begun === 0 ? this.id : `${this.id}_${this.begun}`;
  }

  /** Moves the scan as far as the text allows; the call pieces it settles. */
  private scan(): ToolCallDelta[] {
    const deltas: ToolCallDelta[] = [];
    for (;;) {
      const text = this.text;
      switch (this.phase) {
        case "start": {
          let i = optional(text, skipSpace(text, this.at), MISTRAL_CALLS);
          if (i === MORE) return deltas;
          i = skipSpace(text, i);
          if (i >= text.length) return deltas;
          if (text[i] === "[") {
            this.inList = true;
            i++;
          }
          this.at = i;
          this.phase = "head";
          break;
        }
        case "head": {
          const head = callHead(text, this.at);
          if (head === MORE) return deltas;
          const known = typeof head !== "number" && mayCall(this.plan, head.name);
          if (!known) {
            // Not a call in the streamed form: before any call went out, read the answer whole at the end.
            if (this.mode === "undecided") this.mode = "whole";
            this.phase = "done";
            return deltas;
          }
          this.mode = "calls";
          deltas.push({
            index: this.begun,
            id: this.callId,
            type: "function",
            function: { name: head.name, arguments: "" },
          });
          this.at = head.argumentsAt;
          this.phase = "arguments";
          this.scanner.depth = 0;
          break;
        }
        case "arguments":
        case "rest": {
          const piece = this.json(this.phase === "arguments");
          if (piece !== "") {
            deltas.push({ index: this.begun, function: { arguments: piece } });
          }
          if (this.scanner.depth > 0) return deltas;
          if (this.phase === "arguments") {
            // The call's object is still open around its arguments.
            this.phase = "rest";
            this.scanner.depth = 1;
          } else {
            this.begun++;
            this.phase = "between";
          }
          break;
        }
        case "between": {
          let i = optional(text, skipSpace(text, this.at), TAGGED_CALL_END);
          if (i === MORE) return deltas;
          i = skipSpace(text, i);
          if (i >= text.length) {
            this.at = i;
            return deltas;
          }
          const next = this.inList ? text[i] === "," : text.startsWith("<", i);
          if (next && this.plan.parallel !== false) {
            this.at = this.inList ? i + 1 : i;
            this.phase = "head";
          } else this.phase = "done";
          break;
        }
        case "done":
          return deltas;
      }
    }
  }

  /** The JSON from `at` until its nesting closes or the text ends, compact (`keep`: the arguments; else nothing, the rest of a call being skipped). */
  private json(keep: boolean): string {
    const { read, at } = this.scanner.scan(this.text, this.at);
    this.at = at;
    return keep ? read : "";
  }
}
