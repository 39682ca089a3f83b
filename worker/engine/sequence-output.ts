// What one generating sequence has produced: it samples each next token from the engine's logits, turns
// tokens into text deltas, holds back text that may begin a stop string, and says when the sequence is
// done (a stop token, a stop string, max_tokens, a full context, or with structured output the value's or
// the match's end). Shared by every batching loop.
import type { DecodeChoice, DecodeRow } from "./decode-row.ts";
import { GrammarMode } from "./grammar-mode.ts";
import type { Grammar } from "./grammar-rules.ts";
import { JsonMode } from "./json-mode.ts";
import type { SchemaNode } from "./json-schema.ts";
import { NoTokenLeftError } from "./no-token-left.ts";
import { ReasoningGate, type ReasoningTags } from "./reasoning-gate.ts";
import { RegexMode } from "./regex-mode.ts";
import { type SampledToken, Sampler, type SamplingParams } from "./sampler.ts";
import type { StringAutomaton } from "./string-automaton.ts";
import { StreamingDetokenizer, type Tokenizer } from "./tokenizer.ts";

export interface SequenceLimits {
  maxTokens: number;
  /** Longest sequence, prompt + generated, the engine holds. */
  maxContext: number;
  /** Defaults to the tokenizer's eos ids. */
  stopTokenIds?: readonly number[];
  stopStrings?: readonly string[];
  /** The stop string that ends the sequence is part of its text (vLLM's include_stop_str_in_output). */
  includeStopStrings?: boolean;
  /** Only these tokens may be drawn (vLLM's allowed_token_ids); absent: any. */
  allowedTokenIds?: readonly number[];
  /**
   * Token sequences the output never holds (vLLM's bad_words, tokenized): a sequence's last token is not
   * drawn where the output ends with the rest of it (a one-token sequence, never).
   */
  badWordsIds?: readonly (readonly number[])[];
  /** Neither a stop token (never drawn) nor a stop string ends the sequence before this many tokens. */
  minTokens?: number;
  /**
   * The output is one JSON value of this schema and ends when it is complete (json-mode.ts): ANY_OBJECT for
   * OpenAI's JSON mode, a compiled json_schema for structured outputs. Absent: text.
   */
  json?: SchemaNode;
  /**
   * Instead of `json`: the whole output matches this regex's automaton (regex-mode.ts, compileFullMatch):
   * vLLM's structured outputs `regex` and `choice`.
   */
  regex?: StringAutomaton;
  /**
   * Instead of `json` or `regex`: the whole output is a string of this grammar (grammar-mode.ts,
   * compileGrammar): vLLM's structured outputs `grammar`.
   */
  grammar?: Grammar;
  /**
   * With `json`, `regex` or `grammar`: the model reasons between these tags first, and the structured output follows
   * (reasoning-gate.ts).
   */
  reasoning?: ReasoningTags;
}

export interface Accepted {
  token: SampledToken;
  /** Text this token completes; "" while a character or a possible stop string is incomplete. */
  text: string;
  /** Why the sequence ends with this token, or null while it goes on. */
  finish: "stop" | "length" | null;
  /**
   * True for a stop token: it counts as generated but has no text of its own; `text` is then what the
   * sequence had held back (stream it without a token).
   */
  stopToken: boolean;
}

/** Whether a cut row keeps a token the sampler may draw (a logit above -inf): only `allowed` can, if given. */
function anyDrawable(row: Float32Array, allowed: readonly number[] | undefined): boolean {
  if (allowed) return allowed.some((id) => id < row.length && row[id]! > Number.NEGATIVE_INFINITY);
  return row.some((x) => x > Number.NEGATIVE_INFINITY);
}

export class SequenceOutput {
  readonly tokens: SampledToken[] = [];
  /** Text emitted so far. */
  text = "";
  private readonly sampler: Sampler;
  private readonly detokenizer: StreamingDetokenizer;
  private readonly stopIds: readonly number[];
  private readonly stops: readonly string[];
  /** Decoded text held back because it may begin a stop string. */
  private held = "";
  /** Set with structured output (a JSON value, a regex or a grammar): what may be drawn next. */
  private readonly grammar: JsonMode | RegexMode | GrammarMode | null;
  /** Set with structured output after reasoning: what may be drawn before it. */
  private readonly gate: ReasoningGate | null;
  /** A masked copy of the row: no stop token (min_tokens, reasoning), or one forced token (reasoning). */
  private masked = new Float32Array(0);
  /** The row cut to allowedTokenIds and without bad words' next tokens, when they are given. */
  private restrictedRow = new Float32Array(0);

  constructor(
    tokenizer: Tokenizer,
    sampling: SamplingParams,
    private readonly promptTokens: readonly number[],
    private readonly limits: SequenceLimits,
  ) {
    this.sampler = new Sampler(sampling, promptTokens);
    this.detokenizer = new StreamingDetokenizer(tokenizer);
    this.stopIds = limits.stopTokenIds ?? tokenizer.eosTokenIds;
    this.stops = limits.stopStrings ?? [];
    this.grammar = limits.json
      ? new JsonMode(tokenizer, limits.json, this.stopIds)
      : limits.regex
        ? new RegexMode(tokenizer, limits.regex, this.stopIds, () => !this.belowMinimum)
        : limits.grammar
          ? new GrammarMode(tokenizer, limits.grammar, this.stopIds, () => !this.belowMinimum)
          : null;
    this.gate = this.grammar && limits.reasoning ? new ReasoningGate(limits.reasoning) : null;
  }

  get tokenIds(): number[] {
    return this.tokens.map((t) => t.token);
  }

  /**
   * How the engine may settle this sequence's next token without its whole row (Sampler.decodeChoice);
   * never with structured output, which masks the whole row.
   */
  get decodeChoice(): DecodeChoice | null {
    if (this.grammar || this.belowMinimum || this.limits.allowedTokenIds || this.limits.badWordsIds)
      return null;
    return this.sampler.decodeChoice;
  }

  /** min_tokens still holds off the stop tokens and stop strings. */
  private get belowMinimum(): boolean {
    return this.tokens.length < (this.limits.minTokens ?? 0);
  }

  /**
   * Takes the next token from a decode row — its logits, sampled here, the token the engine picked, or its
   * candidates — and reports what it adds and whether the sequence ends. Null only for candidates that
   * cannot settle the draw (Sampler.sampleCandidates): accept the row's logits then.
   */
  accept(row: Float32Array | number): Accepted;
  accept(row: DecodeRow): Accepted | null;
  accept(row: DecodeRow): Accepted | null {
    if (this.grammar) return this.acceptStructured(row);
    const token =
      typeof row === "number"
        ? this.sampler.take(row)
        : row instanceof Float32Array
          ? this.draw(this.belowMinimum ? this.withoutStopTokens(row) : row)
          : this.sampler.sampleCandidates(row);
    if (!token) return null;
    return this.record(token);
  }

  /**
   * Structured output: the draw from the masked row — the reasoning gate's until its closing tag, then the
   * grammar's — the grammar moved on, and the end once the value or match is complete.
   */
  private acceptStructured(row: DecodeRow): Accepted {
    if (!(row instanceof Float32Array)) {
      throw new Error(
        "a sequence with structured output needs its whole row of logits (it has no decode choice)",
      );
    }
    const grammar = this.grammar!;
    // The tokens this one and the rest may take: max_tokens or the context, whichever ends first.
    const generated = this.tokens.length;
    const budget = Math.min(
      this.limits.maxTokens - generated,
      this.limits.maxContext - this.promptTokens.length - generated,
    );
    const gate = this.gate && !this.gate.answering ? this.gate : null;
    let masked: Float32Array;
    if (gate) {
      const forced = gate.forced(budget, grammar.fewestBytesToEnd);
      masked = forced === null ? this.withoutStopTokens(row) : this.onlyToken(row, forced);
    } else masked = grammar.mask(row, budget);
    const token = this.draw(masked);
    if (gate) {
      gate.take(token.token);
      return this.record(token);
    }
    // A regex's or grammar's output may end on a stop token once it is whole.
    if (this.stopIds.includes(token.token)) return this.record(token);
    grammar.take(token.token);
    const accepted = this.record(token);
    // The value's (or match's) last byte ends the sequence, even on its last allowed token; a stop string
    // that ended it first stays its end.
    if (!grammar.complete || accepted.finish === "stop") return accepted;
    return { ...accepted, text: accepted.text + this.flush(), finish: "stop" };
  }

  /**
   * The sampler's draw from a whole row, cut to allowedTokenIds and without the token that would complete
   * a bad word, when they are given. A token masked out (by them or a grammar) is no alternative: logprobs
   * list only what could have been drawn.
   */
  private draw(row: Float32Array): SampledToken {
    const { allowedTokenIds: allowed, badWordsIds: badWords } = this.limits;
    let input = row;
    if (allowed || badWords) {
      if (this.restrictedRow.length !== row.length) this.restrictedRow = new Float32Array(row.length);
      input = this.restrictedRow;
      if (allowed) {
        input.fill(Number.NEGATIVE_INFINITY);
        for (const id of allowed) if (id < row.length) input[id] = row[id]!;
      } else input.set(row);
      for (const word of badWords ?? []) {
        const last = word[word.length - 1]!;
        if (last < row.length && this.endsWith(word, word.length - 1)) input[last] = Number.NEGATIVE_INFINITY;
      }
      if (!anyDrawable(input, allowed)) {
        throw new NoTokenLeftError(
          "no token can be drawn: allowed_token_ids and bad_words (with the output format, if any) leave none at this point",
        );
      }
    }
    const drawn = this.sampler.sample(input);
    return { ...drawn, top: drawn.top.filter((t) => t.logprob !== Number.NEGATIVE_INFINITY) };
  }

  /** Whether the generated tokens end with the first `count` tokens of `word`. */
  private endsWith(word: readonly number[], count: number): boolean {
    const { tokens } = this;
    if (tokens.length < count) return false;
    for (let i = 0; i < count; i++) {
      if (tokens[tokens.length - count + i]!.token !== word[i]) return false;
    }
    return true;
  }

  /** A copy of the row in which no stop token can be drawn. */
  private withoutStopTokens(row: Float32Array): Float32Array {
    const out = this.maskedFor(row);
    out.set(row);
    for (const id of this.stopIds) if (id < row.length) out[id] = Number.NEGATIVE_INFINITY;
    return out;
  }

  /** A row in which only `token` can be drawn (its logprob 0). */
  private onlyToken(row: Float32Array, token: number): Float32Array {
    if (token >= row.length)
      throw new RangeError(`token ${token} is outside the vocabulary of ${row.length}`);
    const out = this.maskedFor(row).fill(Number.NEGATIVE_INFINITY);
    out[token] = 0;
    return out;
  }

  private maskedFor(row: Float32Array): Float32Array {
    if (this.masked.length !== row.length) this.masked = new Float32Array(row.length);
    return this.masked;
  }

  /** Appends a drawn token: its text, and whether it ends the sequence. */
  private record(token: SampledToken): Accepted {
    this.tokens.push(token);
    // As vLLM checks them: no stop string ends the sequence before its min_tokens-th token (a stop token
    // cannot be drawn before the token after it).
    const stopsApply = !this.belowMinimum;
    // Nothing follows a stop token: text held back for a possible stop string, and an incomplete
    // character (as U+FFFD, like a full decode), are the sequence's last text.
    if (this.stopIds.includes(token.token))
      return { token, text: this.flush(), finish: "stop", stopToken: true };
    const delta = this.detokenizer.push(token.token);
    const { emit, stopped } = stopsApply ? this.applyStopStrings(delta) : { emit: delta, stopped: false };
    this.text += emit;
    if (stopped) return { token, text: emit, finish: "stop", stopToken: false };
    const full = this.promptTokens.length + this.tokens.length >= this.limits.maxContext;
    const finish = this.tokens.length >= this.limits.maxTokens || full ? "length" : null;
    return { token, text: emit, finish, stopToken: false };
  }

  /**
   * Ends a sequence that did not stop on a stop string: what was held back for a possible stop
   * string, and any incomplete character, is text after all. Returns it ("" when nothing was held).
   */
  flush(): string {
    const rest = this.held + this.detokenizer.flush();
    this.held = "";
    this.text += rest;
    return rest;
  }

  /**
   * Stop strings never reach the client: text that could be the start of a stop string is held back until
   * the next tokens rule it in or out. Returns the text safe to emit and whether a stop string completed.
   */
  private applyStopStrings(delta: string): { emit: string; stopped: boolean } {
    if (this.stops.length === 0) return { emit: delta, stopped: false };
    const candidate = this.held + delta;
    let cut = -1;
    let found = "";
    for (const stop of this.stops) {
      const at = candidate.indexOf(stop);
      if (at >= 0 && (cut < 0 || at < cut)) {
        cut = at;
        found = stop;
      }
    }
    if (cut >= 0) {
      this.held = "";
      const end = this.limits.includeStopStrings ? cut + found.length : cut;
      return { emit: candidate.slice(0, end), stopped: true };
    }
    let keep = 0;
    for (const stop of this.stops) {
      for (let k = Math.min(stop.length - 1, candidate.length); k > keep; k--) {
        if (candidate.endsWith(stop.slice(0, k))) {
          keep = k;
          break;
        }
      }
    }
    this.held = candidate.slice(candidate.length - keep);
    return { emit: candidate.slice(0, candidate.length - keep), stopped: false };
  }
}

/** How each running sequence's next token may be settled without its whole row (for decodePicking). */
export function decodeChoices(
  running: Iterable<[string, { output: SequenceOutput }]>,
): Map<string, DecodeChoice> {
  const choices = new Map<string, DecodeChoice>();
  for (const [id, { output }] of running) {
    const choice = output.decodeChoice;
    if (choice) choices.set(id, choice);
  }
  return choices;
}
