// vLLM's structured outputs on chat and completions: `structured_outputs: {choice | regex | json |
// json_object | grammar}` and the older `guided_choice`, `guided_regex`, `guided_json`, `guided_grammar` it
// replaced, as vLLM's clients send them (the OpenAI SDKs' extra_body). A choice or a regex constrains the
// whole answer (worker/engine/regex-mode.ts: a classifier adapter answers exactly one of its labels), as
// does a grammar (worker/engine/grammar-mode.ts); a JSON schema is served as response_format's is. Each is
// compiled here, so one the worker would refuse is a 400 before anything runs. A structural tag is
// refused, never ignored: an answer that silently ignored the constraint would look valid and not be.
import type { ChatCompletionRequest } from "../schema/api.ts";
import type { SamplingParams } from "../schema/wire.ts";
import { compileGrammar } from "../worker/engine/grammar-compiler.ts";
import { GrammarError } from "../worker/engine/grammar-rules.ts";
import { startOf } from "../worker/engine/grammar-stacks.ts";
import { choiceRegex, compileFullMatch, PatternError } from "../worker/engine/string-automaton.ts";
import { checkedSchema } from "./checked-schema.ts";
import { refuseLongSource } from "./compile-budget.ts";
import { timedCompile } from "./compile-clock.ts";
import { invalidRequest, isTooDeep, TOO_DEEP } from "./errors.ts";

type StructuredOutputsRequest = Pick<
  ChatCompletionRequest,
  "structured_outputs" | "guided_choice" | "guided_regex" | "guided_json" | "guided_grammar"
>;

type Kind = "choice" | "regex" | "json" | "json_object" | "grammar" | "unsupported";

/** The output format a request's structured outputs ask for; undefined when it names none. */
export function requestedStructuredOutput(body: StructuredOutputsRequest): SamplingParams["response_format"] {
  const outputs = body.structured_outputs ?? {};
  const fields: [param: string, kind: Kind, value: unknown][] = [
    ["structured_outputs.choice", "choice", outputs.choice],
    ["structured_outputs.regex", "regex", outputs.regex],
    ["structured_outputs.json", "json", outputs.json],
    ["structured_outputs.json_object", "json_object", outputs.json_object],
    ["structured_outputs.grammar", "grammar", outputs.grammar],
    ["structured_outputs.structural_tag", "unsupported", outputs.structural_tag],
    ["guided_choice", "choice", body.guided_choice],
    ["guided_regex", "regex", body.guided_regex],
    ["guided_json", "json", body.guided_json],
    ["guided_grammar", "grammar", body.guided_grammar],
  ];
  const [first, second] = fields.filter(([, , value]) => value !== null && value !== undefined);
  if (!first) return undefined;
  const [param, kind, value] = first;
  if (second) {
    throw invalidRequest(`give one structured output, not both ${param} and ${second[0]}`, second[0]);
  }
  switch (kind) {
    case "unsupported":
      throw invalidRequest(
        `${param} is not supported: constrain the answer with a choice, a regex, a grammar or a JSON schema`,
        param,
      );
    case "choice":
      return {
        regex: compiled(choiceRegex(value as string[]), param, `${param}: the choices, as a pattern,`),
      };
    case "regex":
      return { regex: compiled(value as string, param) };
    case "grammar":
      return { grammar: checkedGrammar(value as string, param) };
    case "json_object":
      return value === true ? "json_object" : undefined;
    case "json":
      return { json_schema: parsedSchema(value as Record<string, unknown> | string, param) };
  }
}

/** The regex, once it is known to compile (its automaton is cached for the worker in this process). */
function compiled(regex: string, param: string, what = `${param}: the pattern`): string {
  refuseLongSource(regex, what, param);
  try {
    timedCompile(() => compileFullMatch(regex));
  } catch (error) {
    if (error instanceof PatternError) throw invalidRequest(`${param}: ${error.message}`, param);
    if (isTooDeep(error)) throw invalidRequest(`${param}: the pattern is ${TOO_DEEP}`, param);
    throw error;
  }
  return regex;
}

/**
 * The grammar, once it is known to compile and start (the compiled grammar is cached for the worker in this
 * process).
 */
function checkedGrammar(grammar: string, param: string): string {
  refuseLongSource(grammar, `${param}: the grammar`, param);
  try {
    timedCompile(() => startOf(compileGrammar(grammar)));
  } catch (error) {
    if (error instanceof GrammarError) throw invalidRequest(`${param}: ${error.message}`, param);
    if (isTooDeep(error)) throw invalidRequest(`${param}: the grammar is ${TOO_DEEP}`, param);
    throw error;
  }
  return grammar;
}

/** The schema, given as an object or as JSON text, read leniently (as a non-strict response_format's). */
function parsedSchema(value: Record<string, unknown> | string, param: string): Record<string, unknown> {
  let schema: unknown = value;
  if (typeof value === "string") {
    try {
      schema = JSON.parse(value);
    } catch {
      throw invalidRequest(`${param} is neither a JSON schema object nor JSON text holding one`, param);
    }
  }
  if (typeof schema !== "object" || schema === null || Array.isArray(schema)) {
    throw invalidRequest(`${param} must be a JSON schema object`, param);
  }
  return checkedSchema(schema as Record<string, unknown>, undefined, param, param);
}
