// OpenAI's function calling on any base model. The functions reach the model through its chat template
// when the template reads `tools` (Llama 3.1, Qwen2.5, Mistral and most instruction templates), or else as a
// system message that asks for a call as {"name", "arguments"} JSON. A call the caller requires
// (tool_choice "required" or a named function) is generated under a JSON schema (the worker's grammar),
// so it is always one of the functions with arguments of its schema. With "auto" the model chooses: an
// answer that is only calls, in the JSON forms instruction templates teach (toolCallsIn), is calls; anything
// else is text. Calls are answered as OpenAI does: content null, tool_calls, finish_reason "tool_calls".
//
// OpenAI's custom tools take free text instead of JSON arguments, held to a format: any text, a Lark
// grammar or a regex. The template sees one as a function of one string parameter, `input`. Named in
// tool_choice (or the only tool under "required"), the whole answer is its input, generated under its
// format by the worker's grammar; under "auto" a call of it, in the usual forms, counts only if its input
// is in its format (else the answer is text), so a custom call's input always is.
import type { ChatCompletionRequest, CustomToolFormat, ToolCall } from "../schema/api.ts";
import type { SamplingParams } from "../schema/wire.ts";
import { compileGrammar } from "../worker/engine/grammar-compiler.ts";
import { GrammarError } from "../worker/engine/grammar-rules.ts";
import { acceptsWhole, startOf } from "../worker/engine/grammar-stacks.ts";
import { isInstance } from "../worker/engine/json-instance.ts";
import { compileJsonSchema, isObject, JsonSchemaError, schemaAsRead } from "../worker/engine/json-schema.ts";
import { compileFullMatch, matchesWhole, PatternError } from "../worker/engine/string-automaton.ts";
import type { ChatMessage } from "../worker/engine/tokenizer.ts";
import { checkedSchema } from "./checked-schema.ts";
import { CompileBudget, refuseLongSource } from "./compile-budget.ts";
import { timedCompile } from "./compile-clock.ts";
import { invalidRequest, isTooDeep, TOO_DEEP } from "./errors.ts";
import { JsonScanner } from "./json-scanner.ts";

type RequestTool = NonNullable<ChatCompletionRequest["tools"]>[number];
/** A tool as the chat template sees it: a function (a custom tool's takes its input as one string). */
export type FunctionTool = Extract<RequestTool, { type: "function" }>;

/** How a request may call tools: null when it gives none, or tool_choice is "none". */
export interface ToolPlan {
  tools: FunctionTool[];
  /** The custom tools among them, by name, and what their input is. */
  custom: Map<string, CustomToolFormat>;
  /** The functions the answer must call one of (required or named); null: the model may answer text. */
  forced: string[] | null;
  /** A custom tool the answer must call: the whole answer is its input. */
  rawInput?: string;
  /**
   * allowed_tools in auto mode: the tools an answer may call (absent: any; empty, with tool_choice none:
   * none); the others are only shown.
   */
  allowed?: ReadonlySet<string>;
  /** parallel_tool_calls (default true); false: an answer's calls after its first are dropped. */
  parallel?: boolean;
}

/** A function declared without parameters takes none, as OpenAI defines it: its arguments are `{}`. */
const NO_PARAMETERS = { type: "object", properties: {}, additionalProperties: false };
const CUSTOM_PARAMETERS = {
  type: "object",
  properties: { input: { type: "string" } },
  required: ["input"],
  additionalProperties: false,
};

/** The schema a function's arguments are generated under (schemaAsRead: lenient unless `strict`). */
function argumentsSchema(tool: FunctionTool): Record<string, unknown> {
  return schemaAsRead(tool.function.parameters ?? NO_PARAMETERS, tool.function.strict);
}

/** Checks tools and tool_choice; throws 400 naming the parameter. */
export function planTools(body: ChatCompletionRequest): ToolPlan | null {
  const given = body.tools ?? [];
  const choice = body.tool_choice ?? (given.length > 0 ? "auto" : "none");
  if (given.length === 0) {
    if (choice === "none" || choice === "auto") return null;
    throw invalidRequest("tool_choice needs tools", "tool_choice");
  }
  const names = new Set<string>();
  const custom = new Map<string, CustomToolFormat>();
  const budget = new CompileBudget();
  const tools = given.map((tool, i): FunctionTool => {
    const name = tool.type === "function" ? tool.function.name : tool.custom.name;
    if (names.has(name)) {
      throw invalidRequest(`tools[${i}]: the name "${name}" is taken by another tool`, `tools.${i}`);
    }
    names.add(name);
    if (tool.type === "custom") {
      const format = tool.custom.format ?? { type: "text" };
      const param = `tools.${i}.custom.format.grammar.definition`;
      checkFormat(format, name, param);
      budget.check(param);
      custom.set(name, format);
      return {
        type: "function",
        function: {
          name,
          description: customDescription(tool.custom.description, format),
          parameters: CUSTOM_PARAMETERS,
        },
      };
    }
    checkedSchema(
      tool.function.parameters ?? NO_PARAMETERS,
      tool.function.strict,
      `function '${name}'`,
      `tools.${i}.function.parameters`,
    );
    return tool;
  });
  const parallel = body.parallel_tool_calls !== false;
  // As OpenAI and vLLM: the tools still reach the prompt (what the model sees, and its prefix cache, do
  // not change with tool_choice), but no answer is a call.
  if (choice === "none") return { tools, custom, forced: null, allowed: new Set(), parallel };
  if (choice === "auto") return { tools, custom, forced: null, parallel };
  let forced: string[];
  if (choice === "required") forced = [...names];
  else if (choice.type === "allowed_tools") {
    const allowed = [
      ...new Set(choice.allowed_tools.tools.map((named) => namedChoice(named, names, custom))),
    ];
    if (choice.allowed_tools.mode === "auto") {
      return { tools, custom, forced: null, allowed: new Set(allowed), parallel };
    }
    forced = allowed;
  } else forced = [namedChoice(choice, names, custom)];
  if (forced.length === 1 && custom.has(forced[0]!)) {
    return { tools, custom, forced, rawInput: forced[0]!, parallel };
  }
  const held = forced.find((name) => custom.get(name)?.type === "grammar");
  if (held) {
    throw invalidRequest(
      `tool_choice cannot hold custom tool "${held}" to its grammar among other tools it requires: name it alone in tool_choice`,
      "tool_choice",
    );
  }
  return { tools, custom, forced, parallel };
}

type NamedChoice = Exclude<
  NonNullable<ChatCompletionRequest["tool_choice"]>,
  string | { type: "allowed_tools" }
>;

/** The tool a named tool_choice names, which must be among the tools and of its type. */
function namedChoice(choice: NamedChoice, names: Set<string>, custom: Map<string, CustomToolFormat>): string {
  const name = choice.type === "function" ? choice.function.name : choice.custom.name;
  if (!names.has(name)) {
    throw invalidRequest(`tool_choice names "${name}", which is not among the tools`, "tool_choice");
  }
  if (custom.has(name) !== (choice.type === "custom")) {
    throw invalidRequest(
      `tool_choice names "${name}" as a ${choice.type} tool; it is a ${custom.has(name) ? "custom" : "function"} tool`,
      "tool_choice",
    );
  }
  return name;
}

/** A custom tool's format compiles (the worker's cache keeps it); 400 naming the parameter where not. */
function checkFormat(format: CustomToolFormat, name: string, param: string): void {
  if (format.type === "text") return;
  const { definition, syntax } = format.grammar;
  refuseLongSource(definition, `custom tool "${name}": its ${syntax} format`, param);
  try {
    timedCompile(() =>
      syntax === "regex" ? compileFullMatch(definition) : startOf(compileGrammar(definition, "lark")),
    );
  } catch (error) {
    if (error instanceof GrammarError || error instanceof PatternError) {
      throw invalidRequest(`custom tool "${name}": its ${syntax} format: ${error.message}`, param);
    }
    if (isTooDeep(error))
      throw invalidRequest(`custom tool "${name}": its ${syntax} format is ${TOO_DEEP}`, param);
    throw error;
  }
}

/** The longest grammar a custom tool's description quotes; a longer one would crowd the prompt. */
const MAX_QUOTED_GRAMMAR = 2_000;

/**
 * What the template says of a custom tool: its description, and its input's grammar where it has one
 * (quoted where it is short; the worker's grammar holds the input either way).
 */
function customDescription(description: string | undefined, format: CustomToolFormat): string {
  let input = "Its input is free text";
  if (format.type === "grammar") {
    const { syntax, definition } = format.grammar;
    const what = syntax === "regex" ? "matching a regex" : "in a Lark grammar";
    input =
      definition.length <= MAX_QUOTED_GRAMMAR
        ? `Its input is text ${what}:\n${definition}`
        : `Its input is text ${what}`;
  }
  return [description ?? "", input].filter((p) => p !== "").join("\n");
}

/** Whether a custom tool's input is in its format. */
function inFormat(format: CustomToolFormat, input: string): boolean {
  if (format.type === "text") return true;
  const { definition, syntax } = format.grammar;
  if (syntax === "regex") return matchesWhole(compileFullMatch(definition), input);
  return acceptsWhole(compileGrammar(definition, "lark"), input);
}

/**
 * The output format that makes the answer a call of one of the forced tools: a custom tool's own format
 * where the answer is its input, else a JSON call. Each function's `$defs` move to the root under names of
 * its own (`f<i>_<name>`), since its `$ref`s now resolve against the call's schema.
 */
export function forcedCallFormat(plan: ToolPlan): SamplingParams["response_format"] {
  if (!plan.forced) return undefined;
  if (plan.rawInput !== undefined) {
    const format = plan.custom.get(plan.rawInput)!;
    if (format.type === "text") return undefined;
    const { definition, syntax } = format.grammar;
    return syntax === "regex" ? { regex: definition } : { grammar: definition, syntax: "lark" };
  }
  const defs: Record<string, unknown> = {};
  const calls = plan.tools
    .filter((tool) => plan.forced!.includes(tool.function.name))
    .map((tool, i) => ({
      type: "object",
      properties: {
        name: { const: tool.function.name },
        arguments: hoistDefs(argumentsSchema(tool), `f${i}_`, defs),
      },
      required: ["name", "arguments"],
      additionalProperties: false,
    }));
  const root = calls.length === 1 ? calls[0]! : { anyOf: calls };
  return { json_schema: Object.keys(defs).length > 0 ? { ...root, $defs: defs } : root };
}

/**
 * Under auto with a JSON response format: the answer is a call of one of the functions it may call, in the
 * JSON form of a required call, or an instance of the format — as OpenAI lets a model call tools and holds
 * only its text answer to the format (an SDK's tool loop with a response_format). Custom tools' calls are
 * not JSON and stay out; a format the two cannot share a grammar with is kept as it is.
 */
export function callOrAnswerFormat(
  plan: ToolPlan,
  format: SamplingParams["response_format"],
): SamplingParams["response_format"] {
  const answer =
    format === "json_object"
      ? { type: "object" }
      : typeof format === "object" && "json_schema" in format
        ? format.json_schema
        : null;
  if (plan.forced || !answer) return format;
  const callable = plan.tools
    .map((tool) => tool.function.name)
    .filter((name) => mayCall(plan, name) && !plan.custom.has(name));
  if (callable.length === 0) return format;
  const calls = forcedCallFormat({ ...plan, forced: callable }) as { json_schema: Record<string, unknown> };
  const { $defs: callDefs, ...callRoot } = calls.json_schema;
  const defs: Record<string, unknown> = { ...(isObject(callDefs) ? callDefs : {}) };
  const answerRoot = hoistDefs(answer, "answer_", defs);
  // One level of branches: a root may be a choice of objects, not a choice of choices.
  const branches = (root: unknown) =>
    isObject(root) && Array.isArray(root.anyOf) && Object.keys(root).length === 1 ? root.anyOf : [root];
  const either = {
    anyOf: [...branches(callRoot), ...branches(answerRoot)],
    ...(Object.keys(defs).length > 0 ? { $defs: defs } : {}),
  };
  try {
    compileJsonSchema(either);
  } catch (error) {
    // Together past what one schema may hold: the answer keeps its format, as before tools were given.
    if (error instanceof JsonSchemaError) return format;
    throw error;
  }
  return { json_schema: either };
}

/**
 * The calls an answer is: a forced custom tool's whole answer, which is its input; a required call as it was
 * written (none where max_tokens cut it before its name: the answer is then empty, never the call's JSON);
 * else what toolCallsIn reads in it, null where it is text.
 */
export function answerCalls(plan: ToolPlan, answer: string, id: string): ToolCall[] | null {
  if (plan.rawInput !== undefined)
    return [{ id, type: "custom", custom: { name: plan.rawInput, input: answer } }];
  if (plan.forced) return requiredCall(answer, id);
  return toolCallsIn(answer, plan, id);
}

/** How a forced answer streams as its call: a custom tool's input, or a required call; null under auto. */
export function forcedCallStream(
  plan: ToolPlan | null,
  id: string,
): RawInputStream | RequiredCallStream | null {
  if (plan?.rawInput !== undefined) return new RawInputStream(plan, id);
  return plan?.forced ? new RequiredCallStream(id) : null;
}

/** The schema with its definitions moved into `defs` under `prefix`ed names, and its references renamed. */
function hoistDefs(schema: Record<string, unknown>, prefix: string, defs: Record<string, unknown>): unknown {
  // `"$ref": "#"` (recursion at the arguments' root) names the arguments, which become a def of their own.
  const whole = `${prefix}$root`;
  let recursive = false;
  const rename = (value: unknown): unknown => {
    if (Array.isArray(value)) return value.map(rename);
    if (typeof value !== "object" || value === null) return value;
    return Object.fromEntries(
      Object.entries(value).map(([key, sub]) => {
        if (key === "$ref" && sub === "#") {
          recursive = true;
          return [key, `#/$defs/${whole}`];
        }
        const ref =
          key === "$ref" && typeof sub === "string" ? /^#\/(\$defs|definitions)\/(.+)$/.exec(sub) : null;
        return [key, ref ? `#/$defs/${prefix}${ref[2]}` : rename(sub)];
      }),
    );
  };
  const { $defs, definitions, ...rest } = schema;
  for (const table of [$defs, definitions]) {
    if (typeof table !== "object" || table === null) continue;
    for (const [name, def] of Object.entries(table)) defs[`${prefix}${name}`] = rename(def);
  }
  const args = rename(rest);
  if (!recursive) return args;
  defs[whole] = args;
  return { $ref: `#/$defs/${whole}` };
}

/**
 * The conversation as the chat template gets it. A template that reads `tools` gets the tools and the
 * messages' calls as they are (arguments parsed); for one that does not, a system message describes the
 * functions, and earlier calls and their results become plain turns it can render.
 */
export function toolMessages(
  messages: ChatMessage[],
  plan: ToolPlan | null,
  templateTakesTools: boolean,
): { messages: ChatMessage[]; tools?: FunctionTool[] } {
  if (templateTakesTools) return plan ? { messages, tools: plan.tools } : { messages };
  const plain = messages.map((m): ChatMessage => {
    if (m.role === "tool")
      return { role: "user", content: `Result of call ${m.tool_call_id ?? ""}: ${m.content}` };
    if (!m.tool_calls) return m;
    const calls = m.tool_calls.map((c) =>
      JSON.stringify({ name: c.function.name, arguments: c.function.arguments }),
    );
    const content = [m.content, ...calls].filter((part) => part !== "").join("\n");
    return {
      role: m.role,
      content,
      ...(m.reasoning_content ? { reasoning_content: m.reasoning_content } : {}),
    };
  });
  if (!plan) return { messages: plain };
  const described = plan.tools.map((t) => JSON.stringify(t.function)).join("\n");
  const instruction =
    "You can call these functions. To call one, answer with only a JSON object " +
    `{"name": <the function's name>, "arguments": <its arguments>}.\n${described}`;
  return { messages: [{ role: "system", content: instruction }, ...plain] };
}

/**
 * An assistant message's calls as the template takes them: a function's arguments parsed (400 where they
 * are not JSON), a custom tool's input as the one argument its function form has.
 */
export function parsedToolCalls(calls: readonly ToolCall[], index: number): ChatMessage["tool_calls"] {
  return calls.map((call, c) => {
    if (call.type === "custom") {
      return {
        id: call.id,
        type: "function",
        function: { name: call.custom.name, arguments: { input: call.custom.input } },
      };
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(call.function.arguments);
    } catch {
      throw invalidRequest(
        `messages[${index}].tool_calls[${c}].function.arguments is not JSON`,
        `messages.${index}.tool_calls.${c}.function.arguments`,
      );
    }
    return { id: call.id, type: "function", function: { name: call.function.name, arguments: parsed } };
  });
}

/**
 * The calls an answer's text makes, if all of it is calls of the tools: one {"name", "arguments"} JSON object
 * (or "parameters", as Llama 3.1 writes it; arguments as an object or as JSON text), a list of them
 * (Mistral's, after its "[TOOL_CALLS]"), or such objects each in <tool_call> tags (Hermes, Qwen2.5).
 * Null for anything else: the answer is text. The calls are numbered `<id>`, `<id>_1`, …; with
 * parallel_tool_calls false only the first is kept (a required call is always one: its grammar makes one).
 */
export function toolCallsIn(text: string, plan: ToolPlan, id: string): ToolCall[] | null {
  let body = text.trim();
  if (body.startsWith(MISTRAL_CALLS)) body = body.slice(MISTRAL_CALLS.length).trim();
  let values: unknown[];
  if (body.startsWith(TAGGED_CALL)) {
    const blocks = [...body.matchAll(/<tool_call>([\s\S]*?)<\/tool_call>/g)];
    if (
      blocks
        .map((b) => b[0])
        .join("")
        .replace(/\s/g, "") !== body.replace(/\s/g, "")
    )
      return null;
    const parsed = blocks.map((b) => parseJson(b[1]!));
    if (parsed.some((v) => v === undefined)) return null;
    values = parsed;
  } else {
    const value = parseJson(body);
    values = Array.isArray(value) ? value : [value];
  }
  if (values.length === 0) return null;
  const calls: ToolCall[] = [];
  for (const [k, value] of values.entries()) {
    if (!isObject(value)) return null;
    const name = value.name;
    let args = value.arguments ?? value.parameters;
    if (typeof args === "string") args = parseJson(args);
    if (typeof name !== "string" || !mayCall(plan, name) || !isObject(args)) return null;
    const callId = k === 0 ? id : `${id}_${k}`;
    const format = plan.custom.get(name);
    if (format) {
      // A custom tool's call counts only with its input, and that in its format.
      const input = args.input;
      if (typeof input !== "string" || !inFormat(format, input)) return null;
      calls.push({ id: callId, type: "custom", custom: { name, input } });
      continue;
    }
    // A strict function's call counts only with arguments of its schema, as OpenAI promises strict ones.
    const tool = plan.tools.find((t) => t.function.name === name)!;
    if (tool.function.strict === true && !isInstance(compileJsonSchema(argumentsSchema(tool)), args))
      return null;
    calls.push({ id: callId, type: "function", function: { name, arguments: JSON.stringify(args) } });
  }
  return plan.parallel === false ? calls.slice(0, 1) : calls;
}

/**
 * Whether an `auto` answer that may be calls is read whole at the end rather than streamed as written: where
 * a call's validity is known only once it is whole — a custom tool's input in its format, a strict
 * function's arguments in its schema (the answer is written freely, not under the grammar).
 */
export function callsReadWhole(plan: ToolPlan): boolean {
  return plan.tools.some(
    (tool) =>
      mayCall(plan, tool.function.name) &&
      (plan.custom.has(tool.function.name) || tool.function.strict === true),
  );
}

/** Whether an answer may call `name`: one of the tools, and one of the allowed ones where those are named. */
export function mayCall(plan: ToolPlan, name: string): boolean {
  return plan.tools.some((t) => t.function.name === name) && (plan.allowed?.has(name) ?? true);
}

/** Mistral's mark before its list of calls. */
export const MISTRAL_CALLS = "[TOOL_CALLS]";
/** Hermes' and Qwen's tags around each call. */
export const TAGGED_CALL = "<tool_call>";
export const TAGGED_CALL_END = "</tool_call>";
/** How an answer that is calls may begin: what a stream holds back until it knows. */
export const CALL_OPENINGS = ["{", "[", TAGGED_CALL];

/** The value JSON text holds; undefined when it is not JSON (no JSON text parses to undefined). */
export function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** One streamed piece of a call (ChatCompletionChunk's delta.tool_calls entry). */
export type ToolCallDelta =
  | { index: number; id?: string; type?: "function"; function: { name?: string; arguments?: string } }
  | { index: number; id?: string; type?: "custom"; custom: { name?: string; input?: string } };

/**
 * A chunk's call pieces with one entry per call, as OpenAI sends them: pieces of one call that came out
 * together (its id and name, and its first arguments) are joined.
 */
export function onePerCall(deltas: readonly ToolCallDelta[]): ToolCallDelta[] {
  const joined: ToolCallDelta[] = [];
  for (const delta of deltas) {
    const last = joined.at(-1);
    if (last?.index === delta.index && "function" in last && "function" in delta) {
      const text = (last.function.arguments ?? "") + (delta.function.arguments ?? "");
      joined[joined.length - 1] = { ...last, function: { ...last.function, arguments: text } };
    } else if (last?.index === delta.index && "custom" in last && "custom" in delta) {
      const text = (last.custom.input ?? "") + (delta.custom.input ?? "");
      joined[joined.length - 1] = { ...last, custom: { ...last.custom, input: text } };
    } else joined.push(delta);
  }
  return joined;
}

/** The start of a required call as its grammar writes it, up to where its arguments begin. */
// Matched only once the arguments' first byte is in, so whitespace before them is never taken for theirs.
const CALL_HEAD = /^\s*\{\s*"name"\s*:\s*"([A-Za-z0-9_-]+)"\s*,\s*"arguments"\s*:\s*(?=\S)/;

/**
 * A required call as its grammar writes it ({"name": …, "arguments": {…}}), read as it comes and streamed
 * as OpenAI streams calls: once its name is written, a delta with the call's id, type, name and the first
 * piece of its arguments; then its arguments as they come, whitespace outside strings dropped (the model's
 * layout is not the call's), up to where the arguments object closes (the call's own closing brace is not
 * theirs). The unstreamed answer reads its call the same way (`requiredCall`), so both agree to the byte,
 * also for a call cut off by max_tokens, whose arguments are what was written.
 */
export class RequiredCallStream {
  private text = "";
  private name: string | null = null;
  /** Where the scan of the arguments has reached in `text`. */
  private at = 0;
  private readonly scanner = new JsonScanner();
  private closed = false;
  /** The arguments so far, compact. */
  private written = "";

  constructor(private readonly id: string) {}

  push(text: string): ToolCallDelta[] {
    this.text += text;
    let opened = false;
    if (this.name === null) {
      const head = CALL_HEAD.exec(this.text);
      if (!head) return [];
      this.name = head[1]!;
      this.at = head[0].length;
      opened = true;
    }
    const piece = this.scan();
    this.written += piece;
    if (opened)
      return [{ index: 0, id: this.id, type: "function", function: { name: this.name, arguments: piece } }];
    return piece === "" ? [] : [{ index: 0, function: { arguments: piece } }];
  }

  /** At the end: nothing more to send (every piece went out as it was read). */
  end(): ToolCallDelta[] {
    return [];
  }

  /** The call as written so far; none where its name was not reached. */
  call(): ToolCall[] {
    return this.name === null
      ? []
      : [{ id: this.id, type: "function", function: { name: this.name, arguments: this.written } }];
  }

  /** The arguments from `at` until their object closes or the text ends, compact. */
  private scan(): string {
    if (this.closed) return "";
    const { read, at } = this.scanner.scan(this.text, this.at);
    this.at = at;
    if (read !== "" && this.scanner.depth === 0) this.closed = true;
    return read;
  }
}

/** A required call read from the whole answer, as its stream reads it: none where it was cut before its name. */
function requiredCall(answer: string, id: string): ToolCall[] {
  const stream = new RequiredCallStream(id);
  stream.push(answer);
  return stream.call();
}

/**
 * A forced custom tool's answer streamed as its call: a first delta with the call's id, type, name and
 * the answer's first piece, then each piece of the answer as a piece of its input.
 */
export class RawInputStream {
  private begun = false;

  constructor(
    private readonly plan: ToolPlan,
    private readonly id: string,
  ) {}

  push(text: string): ToolCallDelta[] {
    if (!this.begun) {
      this.begun = true;
      // One entry per chunk: the head with the input's first piece.
      return [{ index: 0, id: this.id, type: "custom", custom: { name: this.plan.rawInput!, input: text } }];
    }
    return text === "" ? [] : [{ index: 0, custom: { input: text } }];
  }

  /** At the end: the call's first delta, where the answer was empty. */
  end(): ToolCallDelta[] {
    return this.begun ? [] : this.push("");
  }
}
