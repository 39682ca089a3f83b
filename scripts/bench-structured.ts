// `luminet bench structured`: what structured output's mask costs a step, per kind of constraint, on the
// bench shape's 32,000-token vocabulary (its tokenizer alone: no model runs, so the figures are the host's
// work beside a step, not the step). Each case compiles its constraint once, as a process meets it (the
// gateway to check a request, the worker to serve it), then masks random logits for `walks` walks of up to
// `steps` tokens, taking the best token the mask allows with the budget that closes the output in time. The
// first walk meets states the process has not tabled yet (a trie walk each), the later ones mostly tabled
// states, as a worker serving the same constraint again does.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { compileGrammar } from "../worker/engine/grammar-compiler.ts";
import { GrammarMode } from "../worker/engine/grammar-mode.ts";
import { JsonMode } from "../worker/engine/json-mode.ts";
import { compileJsonSchema } from "../worker/engine/json-schema.ts";
import { parseModelConfig } from "../worker/engine/model-config.ts";
import { Prng } from "../worker/engine/prng.ts";
import { RegexMode } from "../worker/engine/regex-mode.ts";
import { choiceRegex, compileFullMatch } from "../worker/engine/string-automaton.ts";
import { tokenTrie } from "../worker/engine/token-trie.ts";
import { loadTokenizer, type Tokenizer } from "../worker/engine/tokenizer.ts";
import { machineName } from "./bench-engine.ts";
import { saveBenchResult } from "./bench-result.ts";
import { percentile, round } from "./bench-stats.ts";
import { tinyConfigJson, writeTinyTokenizer } from "./tiny-model.ts";

export interface StructuredBenchOptions {
  /** Walks per case; the first one tables the states it meets. Default 5. */
  walks?: number;
  /** Most tokens a walk draws (its budget). Default 48. */
  steps?: number;
  /** Only the cases whose names are given (all by default). */
  cases?: readonly string[];
}

export interface StructuredCaseResult {
  name: string;
  kind: "json_schema" | "regex" | "grammar";
  /** The constraint's compile, once per process. */
  compile_ms: number;
  /** The first walk's masks: states met for the first time. */
  first_walk_ms: { mean: number; max: number };
  /** The later walks' masks. */
  later_walks_ms: { p50: number; p99: number; max: number };
  masks: number;
  /** Walks whose output was whole when they ended (within their budget). */
  walks_complete: number;
}

export interface StructuredBenchResult {
  machine: string;
  vocab: number;
  walks: number;
  steps: number;
  cases: StructuredCaseResult[];
}

/** A sequence's mask over the vocabulary, as each kind of constraint has one. */
interface Mask {
  mask(logits: Float32Array, budget: number): Float32Array;
  take(token: number): void;
  readonly complete: boolean;
}

interface Case {
  name: string;
  kind: StructuredCaseResult["kind"];
  /** Compiles the constraint and returns how to start a sequence under it. */
  compile(tokenizer: Tokenizer): () => Mask;
}

const LARK_JSON = `
?start: value
?value: object | array | ESCAPED_STRING | SIGNED_NUMBER | "true" | "false" | "null"
array: "[" [value ("," value)*] "]"
object: "{" [pair ("," pair)*] "}"
pair: ESCAPED_STRING ":" value
%import common.ESCAPED_STRING
%import common.SIGNED_NUMBER
%import common.WS
%ignore WS
`;

const LARK_SQL = `
start: "SELECT"i _WS cols _WS "FROM"i _WS NAME (_WS "WHERE"i _WS cond)? ";"
cols: "*" | NAME ("," _WS? NAME)*
cond: NAME _WS? OP _WS? (NUMBER | STRING)
OP: "=" | "<" | ">" | "<=" | ">=" | "!="
NAME: /[a-z_][a-z0-9_]*/
STRING: /'[^']*'/
_WS: " "+
%import common.NUMBER
`;

const EBNF_ARITHMETIC = `
root ::= expr
expr ::= term (("+" | "-") term)*
term ::= factor (("*" | "/") factor)*
factor ::= [0-9]+ | "(" expr ")"
`;

const grammarCase = (name: string, text: string): Case => ({
  name,
  kind: "grammar",
  compile: (tokenizer) => {
    const grammar = compileGrammar(text);
    return () => new GrammarMode(tokenizer, grammar, tokenizer.eosTokenIds, () => true);
  },
});

const regexCase = (name: string, regex: string): Case => ({
  name,
  kind: "regex",
  compile: (tokenizer) => {
    const automaton = compileFullMatch(regex);
    return () => new RegexMode(tokenizer, automaton, tokenizer.eosTokenIds, () => true);
  },
});

export const STRUCTURED_CASES: readonly Case[] = [
  {
    name: "json schema: an object of a name, an age and tags",
    kind: "json_schema",
    compile: (tokenizer) => {
      const schema = compileJsonSchema({
        type: "object",
        properties: {
          name: { type: "string", maxLength: 24 },
          age: { type: "integer", minimum: 0, maximum: 150 },
          tags: { type: "array", items: { type: "string", enum: ["new", "vip", "churned"] } },
        },
        required: ["name", "age", "tags"],
        additionalProperties: false,
      });
      return () => new JsonMode(tokenizer, schema, tokenizer.eosTokenIds);
    },
  },
  regexCase("regex: an e-mail address", "[a-z0-9._]{1,20}@[a-z0-9]{1,12}\\.(com|org|net)"),
  regexCase("choice: one of 100 labels", choiceRegex(Array.from({ length: 100 }, (_, i) => `label-${i}`))),
  grammarCase("ebnf: arithmetic with nested groups", EBNF_ARITHMETIC),
  grammarCase("lark: JSON (common terminals, %ignore WS)", LARK_JSON),
  grammarCase("lark: a small SQL dialect", LARK_SQL),
  grammarCase(
    "lark: 4,000 alternative labels",
    `start: ${Array.from({ length: 4000 }, (_, i) => `"label-${i}"`).join(" | ")}`,
  ),
];

export function runStructuredBench(options: StructuredBenchOptions = {}): StructuredBenchResult {
  const walks = options.walks ?? 5;
  const steps = options.steps ?? 48;
  const cases = options.cases
    ? STRUCTURED_CASES.filter((c) => options.cases!.includes(c.name))
    : STRUCTURED_CASES;
  const dir = mkdtempSync(join(tmpdir(), "luminet-bench-structured-"));
  try {
    writeTinyTokenizer(dir, parseModelConfig(tinyConfigJson("bench-1b", 1, "F32", "llama")));
    const tokenizer = loadTokenizer(dir);
    const vocab = tokenizer.vocabSize;
    // The vocabulary's trie is built once per process, before any case: no case pays for it.
    tokenTrie(tokenizer, vocab);
    return {
      machine: machineName("cpu"),
      vocab,
      walks,
      steps,
      cases: cases.map((c) => runCase(c, tokenizer, walks, steps)),
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function runCase(c: Case, tokenizer: Tokenizer, walks: number, steps: number): StructuredCaseResult {
  const started = performance.now();
  const start = c.compile(tokenizer);
  const compileMs = performance.now() - started;
  const prng = new Prng(7, 0);
  const logits = new Float32Array(tokenizer.vocabSize);
  const first: number[] = [];
  const later: number[] = [];
  let complete = 0;
  for (let walk = 0; walk < walks; walk++) {
    if (walkEndsWhole(start(), tokenizer, steps, prng, logits, walk === 0 ? first : later)) complete++;
  }
  const mean = first.reduce((a, b) => a + b, 0) / Math.max(1, first.length);
  return {
    name: c.name,
    kind: c.kind,
    compile_ms: round(compileMs, 2),
    first_walk_ms: { mean: round(mean), max: round(Math.max(0, ...first)) },
    later_walks_ms: {
      p50: round(percentile(later, 50)),
      p99: round(percentile(later, 99)),
      max: round(Math.max(0, ...later)),
    },
    masks: first.length + later.length,
    walks_complete: complete,
  };
}

/**
 * One walk of up to `steps` tokens, each mask's time pushed to `times`; whether the output was whole when it
 * ended (a stop token drawn, nothing could follow, or a stop token allowed after its last step).
 */
function walkEndsWhole(
  sequence: Mask,
  tokenizer: Tokenizer,
  steps: number,
  prng: Prng,
  logits: Float32Array,
  times: number[],
): boolean {
  const stops = tokenizer.eosTokenIds;
  for (let step = 0; step < steps; step++) {
    for (let i = 0; i < logits.length; i++) logits[i] = prng.nextFloat() * 8;
    const before = performance.now();
    const row = sequence.mask(logits, steps - step);
    times.push(performance.now() - before);
    const token = bestAllowed(row);
    if (stops.includes(token)) return true;
    sequence.take(token);
    if (sequence.complete) return true;
  }
  const row = sequence.mask(logits, 1);
  return stops.some((id) => row[id] !== Number.NEGATIVE_INFINITY);
}

/** The allowed token with the largest logit (the mask leaves at least one). */
function bestAllowed(row: Float32Array): number {
  let best = -1;
  for (let i = 0; i < row.length; i++) {
    if (row[i] !== Number.NEGATIVE_INFINITY && (best < 0 || row[i]! > row[best]!)) best = i;
  }
  return best;
}

export function reportStructuredBench(
  result: StructuredBenchResult,
  json: boolean,
  resultsDir = "bench/results",
): void {
  if (saveBenchResult("structured", result, json, resultsDir)) return;
  process.stdout.write(
    `structured output masks on ${result.machine} (${result.vocab}-token vocabulary; ${result.walks} walks of up to ${result.steps} tokens per case)\n`,
  );
  process.stdout.write(
    `${"case".padEnd(52)}compile   first walk mean/max   later p50/p99/max   (ms)   complete\n`,
  );
  for (const c of result.cases) {
    const { first_walk_ms: f, later_walks_ms: l } = c;
    process.stdout.write(
      `${c.name.padEnd(52)}${c.compile_ms.toFixed(1).padEnd(10)}${`${f.mean.toFixed(2)} / ${f.max.toFixed(1)}`.padEnd(22)}${`${l.p50.toFixed(2)} / ${l.p99.toFixed(2)} / ${l.max.toFixed(1)}`.padEnd(27)}${c.walks_complete}/${result.walks}\n`,
    );
  }
}
