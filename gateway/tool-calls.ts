// OpenAI's function calling on any base model. The functions reach the model through its chat template
// when the template reads `tools` (Llama 3.1, Qwen2.5, Mistral and most instruction templates), or else as a
// system message that asks for a call as {"name", "arguments"} JSON. A call the caller requires
// (tool_choice "required" or a named function) is generated under a JSON schema (the worker's grammar),
// so it is always one of the functions with arguments of its schema. With "auto" the model chooses: an
// answer that is only calls, in the JSON forms instruction templates teach (toolCallsIn), is calls; anything
// else is text. Calls are answered as OpenAI does: content null, tool_calls, finish_reason "tool_calls".
import type { ChatCompletionRequest, ToolCall } from "../schema/api.ts";
import type { SamplingParams } from "../schema/wire.ts";
import { isObject, schemaAsRead } from "../worker/engine/json-schema.ts";
import type { ChatMessage } from "../worker/engine/tokenizer.ts";
import { checkedSchema } from "./checked-schema.ts";
import { invalidRequest } from "./errors.ts";

type Tool = NonNullable<ChatCompletionRequest["tools"]>[number];

/** How a request may call functions: null when it gives none, or tool_choice is "none". */
export interface ToolPlan {
  tools: Tool[];
  /** The functions the answer must call one of (required or named); null: the model may answer text. */
  forced: string[] | null;
  /** parallel_tool_calls (default true); false: an answer's calls after its first are dropped. */
  parallel?: boolean;
}

const ANY_PARAMETERS = { type: "object" };

/** The schema a function's arguments are generated under (schemaAsRead: lenient unless `strict`). */
function argumentsSchema(tool: Tool): Record<string, unknown> {
  return schemaAsRead(tool.function.parameters ?? ANY_PARAMETERS, tool.function.strict);
}

/** Checks tools and tool_choice; throws 400 naming the parameter. */
export function planTools(body: ChatCompletionRequest): ToolPlan | null {
  const tools = body.tools ?? [];
  const choice = body.tool_choice ?? (tools.length > 0 ? "auto" : "none");
  if (tools.length === 0) {
    if (choice === "none" || choice === "auto") return null;
    throw invalidRequest("tool_choice needs tools", "tool_choice");
  }
  const names = new Set<string>();
  for (const [i, tool] of tools.entries()) {
    if (names.has(tool.function.name)) {
      throw invalidRequest(
        `tools[${i}]: the name "${tool.function.name}" is taken by another tool`,
        `tools.${i}`,
      );
    }
    names.add(tool.function.name);
    checkedSchema(
      tool.function.parameters ?? ANY_PARAMETERS,
      tool.function.strict,
      `function '${tool.function.name}'`,
      `tools.${i}.function.parameters`,
    );
  }
  if (choice === "none") return null;
  const parallel = body.parallel_tool_calls !== false;
  if (choice === "auto") return { tools, forced: null, parallel };
  if (choice === "required") return { tools, forced: [...names], parallel };
  if (!names.has(choice.function.name)) {
    throw invalidRequest(
      `tool_choice names "${choice.function.name}", which is not among the tools`,
      "tool_choice",
    );
  }
  return { tools, forced: [choice.function.name], parallel };
}

/**
 * The output format that makes the answer a call of one of the forced functions. Each function's `$defs`
 * move to the root under names of its own (`f<i>_<name>`), since its `$ref`s now resolve against the call's
 * schema.
 */
export function forcedCallFormat(plan: ToolPlan): SamplingParams["response_format"] {
  if (!plan.forced) return undefined;
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

/** The schema with its definitions moved into `defs` under `prefix`ed names, and its references renamed. */
function hoistDefs(schema: Record<string, unknown>, prefix: string, defs: Record<string, unknown>): unknown {
  const rename = (value: unknown): unknown => {
    if (Array.isArray(value)) return value.map(rename);
    if (typeof value !== "object" || value === null) return value;
    return Object.fromEntries(
      Object.entries(value).map(([key, sub]) => {
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
  return rename(rest);
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
): { messages: ChatMessage[]; tools?: Tool[] } {
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

/** An assistant message's calls, arguments parsed for the template; 400 for arguments that are not JSON. */
export function parsedToolCalls(calls: readonly ToolCall[], index: number): ChatMessage["tool_calls"] {
  return calls.map((call, c) => {
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
    if (typeof name !== "string" || !plan.tools.some((t) => t.function.name === name) || !isObject(args)) {
      return null;
    }
    calls.push({
      id: k === 0 ? id : `${id}_${k}`,
      type: "function",
      function: { name, arguments: JSON.stringify(args) },
    });
  }
  return plan.parallel === false ? calls.slice(0, 1) : calls;
}

/** Mistral's mark before its list of calls. */
export const MISTRAL_CALLS = "[TOOL_CALLS]";
/** Hermes' and Qwen's tags around each call. */
export const TAGGED_CALL = "<tool_call>";
export const TAGGED_CALL_END = "</tool_call>";
/** How an answer that is calls may begin: what a stream holds back until it knows. */
export const CALL_OPENINGS = ["{", "[", TAGGED_CALL];

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** One streamed piece of a call (ChatCompletionChunk's delta.tool_calls entry). */
export interface ToolCallDelta {
  index: number;
  id?: string;
  type?: "function";
  function: { name?: string; arguments?: string };
}

/** The start of a required call as its grammar writes it, up to where its arguments begin. */
// Matched only once the arguments' first byte is in, so whitespace before them is never taken for theirs.
const CALL_HEAD = /^\s*\{\s*"name"\s*:\s*"([A-Za-z0-9_-]+)"\s*,\s*"arguments"\s*:\s*(?=\S)/;

/**
 * A required call streamed as OpenAI streams calls: once its name is written, a delta with the call's id,
 * type and name; then its arguments' text as it comes, less a closing brace at the end, which may be the
 * call's own (it is let through once more text follows it).
 */
export class RequiredCallStream {
  private text = "";
  private argumentsAt = -1;
  private sent = 0;

  constructor(private readonly id: string) {}

  push(text: string): ToolCallDelta[] {
    this.text += text;
    const deltas: ToolCallDelta[] = [];
    if (this.argumentsAt < 0) {
      const head = CALL_HEAD.exec(this.text);
      if (!head) return deltas;
      this.argumentsAt = head[0].length;
      this.sent = this.argumentsAt;
      deltas.push({ index: 0, id: this.id, type: "function", function: { name: head[1]!, arguments: "" } });
    }
    return [...deltas, ...this.argumentsUpTo(this.text.replace(/\}\s*$/, "").length)];
  }

  /** At the end: the rest of the arguments, the call's closing brace left out. */
  end(): ToolCallDelta[] {
    return this.argumentsAt < 0 ? [] : this.argumentsUpTo(this.text.replace(/\}\s*$/, "").length);
  }

  private argumentsUpTo(end: number): ToolCallDelta[] {
    if (end <= this.sent) return [];
    const piece = this.text.slice(this.sent, end);
    this.sent = end;
    return [{ index: 0, function: { arguments: piece } }];
  }
}
