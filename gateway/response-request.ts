// A Responses API request (schema/responses-api.ts) as the chat request it means, admitted by the same
// checks as /v1/chat/completions (gateway/admission.ts): instructions become a system message, input items
// become chat messages (function and custom tool calls an assistant's tool_calls, their outputs tool
// messages), text.format
// the response format, max_output_tokens the completion budget. Admission's errors name chat's fields; they
// are relabelled here to the fields the caller sent. What Luminet does not do is refused with a 400.
import type { ChatCompletionRequest, ChatMessageIn, ToolCall } from "../schema/api.ts";
import {
  INCLUDABLE,
  INCLUDE_LOGPROBS,
  type InputItem,
  type ResponseCreateRequest,
} from "../schema/responses-api.ts";
import { type Admitted, admitChat, mentionsJson } from "./admission.ts";
import type { BaseModelInfo } from "./bases.ts";
import { ApiError, invalidRequest } from "./errors.ts";
import { parseJson } from "./tool-calls.ts";

/** What the caller asked for that Luminet does not do, refused by name. */
function refuseUnsupported(body: ResponseCreateRequest): void {
  if (body.background === true && body.store === false) {
    throw invalidRequest("A background response must be stored: store cannot be false.", "store");
  }
  if (body.prompt != null) throw invalidRequest("prompt templates are not supported", "prompt");
  const verbosity = body.text?.verbosity;
  if (verbosity != null && verbosity !== "medium") {
    throw invalidRequest(
      `text.verbosity '${verbosity}' is not supported: the models are not trained to follow it (only 'medium', the default)`,
      "text.verbosity",
    );
  }
  for (const [i, value] of (body.include ?? []).entries()) {
    if (!(INCLUDABLE as readonly string[]).includes(value)) {
      const supported = INCLUDABLE.map((v) => `'${v}'`).join(", ");
      throw invalidRequest(`Invalid value: '${value}'. Supported values are: ${supported}.`, `include.${i}`);
    }
  }
}

/**
 * Refuses a request that continues both a conversation and a response; checked before either is read, so
 * the answer is this 400 whether or not they exist.
 */
export function refuseTwoContinuations(body: ResponseCreateRequest): void {
  if (body.conversation != null && body.previous_response_id != null) {
    throw invalidRequest(
      "conversation and previous_response_id cannot both be given: a response continues one or the other.",
      "conversation",
    );
  }
}

type CallItem = Extract<InputItem, { type: "function_call" | "custom_tool_call" }>;
type CallOutputItem = Extract<InputItem, { type: "function_call_output" | "custom_tool_call_output" }>;

/** A call of a function or a custom tool. */
function isCall(item: InputItem): item is CallItem {
  return item.type === "function_call" || item.type === "custom_tool_call";
}

/** A function's or a custom tool's output, answering a call by its call_id. */
function isCallOutput(item: InputItem): item is CallOutputItem {
  return item.type === "function_call_output" || item.type === "custom_tool_call_output";
}

/** A request with no input answers the conversation it continues; without one there is nothing to answer. */
function refuseNothingToAnswer(body: ResponseCreateRequest): void {
  if (body.input == null && body.conversation == null && body.previous_response_id == null) {
    throw invalidRequest(
      "input is required unless conversation or previous_response_id gives the conversation to answer",
      "input",
    );
  }
}

/**
 * Refuses a tool output of the request's input (items from `inputAt` on) whose call_id names no call
 * before it, in the input or in what it continues, as OpenAI does. Earlier items are not checked: they
 * were taken when stored (an output added to a conversation alone, a call deleted from it), and refusing
 * them now would leave the conversation unanswerable.
 */
function refuseUnansweredOutputs(conversation: readonly InputItem[], inputAt: number): void {
  const calls = new Set<string>();
  for (const [k, item] of conversation.entries()) {
    if (isCall(item)) calls.add(item.call_id);
    if (!isCallOutput(item) || k < inputAt || calls.has(item.call_id)) continue;
    const at = k - inputAt;
    throw invalidRequest(
      `No tool call found for ${item.type} with call_id ${JSON.stringify(item.call_id)}: input[${at}] must answer a function_call or custom_tool_call before it, in the input or in the conversation it continues.`,
      `input.${at}.call_id`,
    );
  }
}

/**
 * Refuses a call in the request's input (from `inputAt` on) that no output after it answers, as OpenAI
 * does: the model would be asked to go on from a call nobody ran. Earlier items are not checked, as above.
 */
function refuseUnansweredCalls(conversation: readonly InputItem[], inputAt: number): void {
  const answered = new Set<string>();
  for (let k = conversation.length - 1; k >= inputAt; k--) {
    const item = conversation[k]!;
    if (isCallOutput(item)) answered.add(item.call_id);
    if (isCall(item) && !answered.has(item.call_id)) {
      throw invalidRequest(
        `No tool output found for ${item.type} ${JSON.stringify(item.call_id)}: input[${k - inputAt}] needs a ${item.type}_output after it with that call_id.`,
        "input",
      );
    }
  }
}

function partsText(
  parts: string | { type: string; text?: string; refusal?: string }[],
  param: string,
): string {
  if (typeof parts === "string") return parts;
  return parts
    .map((part, j) => {
      if (part.type === "refusal") return part.refusal ?? "";
      if ((part.type === "input_text" || part.type === "output_text") && part.text !== undefined) {
        return part.text;
      }
      throw invalidRequest(
        `${param}[${j}]: content of type ${JSON.stringify(part.type)} is not supported: Luminet serves text models`,
        `${param}.${j}`,
      );
    })
    .join("");
}

/** A reasoning item's text: its reasoning text, or else its summary. */
function reasoningText(item: Extract<InputItem, { type: "reasoning" }>): string {
  const parts = item.content?.length ? item.content : (item.summary ?? []);
  return parts.map((part) => part.text).join("\n\n");
}

/**
 * The conversation as chat messages: consecutive function calls join one assistant turn (the assistant
 * message right before them, if any), as chat writes an answer that calls several functions. A reasoning
 * item becomes the reasoning_content of the assistant turn it led to (the next message or calls); the
 * chat template decides whether it reaches the prompt.
 */
function chatMessagesOf(items: readonly InputItem[], firstIndex = 0, field = "input"): ChatMessageIn[] {
  const messages: ChatMessageIn[] = [];
  let reasoning: string | null = null;
  const thought = () => {
    const text = reasoning;
    reasoning = null;
    return text ? { reasoning_content: text } : {};
  };
  for (const [k, item] of items.entries()) {
    const param = `${field}.${k - firstIndex}`;
    if (item.type === "reasoning") {
      reasoning = reasoningText(item);
      continue;
    }
    if (item.type === "message") {
      const content = partsText(item.content, `${param}.content`);
      const turn = thought();
      messages.push({ role: item.role, content, ...(item.role === "assistant" ? turn : {}) });
      continue;
    }
    if (isCallOutput(item)) {
      reasoning = null;
      messages.push({
        role: "tool",
        tool_call_id: item.call_id,
        content: partsText(item.output, `${param}.output`),
      });
      continue;
    }
    let call: ToolCall;
    if (item.type === "custom_tool_call") {
      call = { id: item.call_id, type: "custom", custom: { name: item.name, input: item.input } };
    } else {
      let args = item.arguments;
      if (parseJson(args) === undefined) {
        if (k >= firstIndex) throw invalidRequest(`${param}.arguments is not JSON`, `${param}.arguments`);
        // An earlier item was taken when it was stored — a call of the model's own cut by max_output_tokens
        // ends half written — and refusing it now would leave what continues it unanswerable: its text
        // reaches the template as a JSON string.
        args = JSON.stringify(args);
      }
      call = { id: item.call_id, type: "function", function: { name: item.name, arguments: args } };
    }
    const last = messages.at(-1);
    if (last?.role === "assistant") {
      last.tool_calls = [...(last.tool_calls ?? []), call];
      if (reasoning && !last.reasoning_content) Object.assign(last, thought());
    } else messages.push({ role: "assistant", content: null, tool_calls: [call], ...thought() });
    reasoning = null;
  }
  return messages;
}

/**
 * Refuses items a conversation cannot hold (content that is not text, a call's arguments that are not
 * JSON), naming the item under `field`, as a response's input would be refused.
 */
export function checkItems(items: readonly InputItem[], field: string): void {
  chatMessagesOf(items, 0, field);
}

/** The chat request a Responses request means: its conversation, whose request input starts at `inputAt`. */
function chatRequestOf(
  body: ResponseCreateRequest,
  conversation: readonly InputItem[],
  inputAt: number,
): ChatCompletionRequest {
  const messages = chatMessagesOf(conversation, inputAt);
  if (body.instructions) messages.unshift({ role: "system", content: body.instructions });
  if (messages.length === 0) {
    throw invalidRequest(
      body.conversation != null
        ? "There is nothing to answer: the conversation holds no messages or calls, and neither does input."
        : "input must hold at least one message or call",
      "input",
    );
  }
  const format = body.text?.format;
  const logprobs = (body.include ?? []).includes(INCLUDE_LOGPROBS) || (body.top_logprobs ?? 0) > 0;
  return {
    model: body.model,
    messages,
    max_completion_tokens: body.max_output_tokens,
    temperature: body.temperature,
    top_p: body.top_p,
    top_k: body.top_k,
    min_p: body.min_p,
    seed: body.seed,
    repetition_penalty: body.repetition_penalty,
    min_tokens: body.min_tokens,
    ignore_eos: body.ignore_eos,
    stop_token_ids: body.stop_token_ids,
    allowed_token_ids: body.allowed_token_ids,
    bad_words: body.bad_words,
    stream: body.stream,
    prompt_cache_key: body.prompt_cache_key,
    logprobs,
    top_logprobs: logprobs ? (body.top_logprobs ?? 0) : null,
    tools: body.tools?.map((tool) => {
      const description = tool.description ? { description: tool.description } : {};
      if (tool.type === "custom") {
        const format = tool.format ?? { type: "text" as const };
        return {
          type: "custom" as const,
          custom: {
            name: tool.name,
            ...description,
            format:
              format.type === "text"
                ? format
                : {
                    type: "grammar" as const,
                    grammar: { definition: format.definition, syntax: format.syntax },
                  },
          },
        };
      }
      const { name, parameters, strict } = tool;
      return {
        type: "function" as const,
        function: { name, ...description, ...(parameters ? { parameters } : {}), strict },
      };
    }),
    tool_choice: chatToolChoice(body.tool_choice),
    parallel_tool_calls: body.parallel_tool_calls,
    reasoning_effort: body.reasoning?.effort,
    response_format:
      format?.type === "json_schema"
        ? {
            type: "json_schema",
            json_schema: { name: format.name, schema: format.schema, strict: format.strict },
          }
        : format,
  };
}

/** A Responses tool_choice as chat writes it. */
function chatToolChoice(choice: ResponseCreateRequest["tool_choice"]): ChatCompletionRequest["tool_choice"] {
  if (typeof choice !== "object" || choice === null) return choice;
  const named = ({ type, name }: { type: "function" | "custom"; name: string }) =>
    type === "custom" ? { type, custom: { name } } : { type, function: { name } };
  if (choice.type === "allowed_tools") {
    return { type: "allowed_tools", allowed_tools: { mode: choice.mode, tools: choice.tools.map(named) } };
  }
  return named(choice);
}

/** A chat field admission named, as the Responses request calls it. */
function responsesParam(param: string | null): string | null {
  if (param === null) return null;
  if (param === "messages" || param.startsWith("messages.")) return "input";
  if (param === "max_completion_tokens") return "max_output_tokens";
  if (param === "reasoning_effort") return "reasoning.effort";
  if (param === "response_format.json_schema.schema") return "text.format.schema";
  if (param.startsWith("response_format")) return "text.format";
  return param
    .replace(/^tools\.(\d+)\.function\./, "tools.$1.")
    .replace(/^tools\.(\d+)\.custom\.format\.grammar\./, "tools.$1.format.");
}

/**
 * The ways `truncation: "auto"` may shorten a conversation, shortest drop first: each keeps the leading
 * system or developer messages and the items from a cut on, the cut moving past one more item at a time,
 * always keeping the newest item — but never between a call (function or custom tool) and its output, so
 * no kept output answers a call that was dropped, parallel calls' outputs included.
 */
function truncations(conversation: readonly InputItem[]): { at: number; cuts: number[] } {
  const at = conversation.findIndex(
    (item) => !(item.type === "message" && (item.role === "system" || item.role === "developer")),
  );
  if (at < 0) return { at: 0, cuts: [0] };
  const callAt = new Map<string, number>();
  // splits[k]: a cut at k would keep an output whose call is before k.
  const splits = new Array<boolean>(conversation.length).fill(false);
  for (const [k, item] of conversation.entries()) {
    if (isCall(item)) callAt.set(item.call_id, k);
    if (isCallOutput(item)) {
      const call = callAt.get(item.call_id);
      if (call !== undefined) for (let cut = call + 1; cut <= k; cut++) splits[cut] = true;
    }
  }
  const cuts = [at];
  for (let cut = at + 1; cut < conversation.length; cut++) if (!splits[cut]) cuts.push(cut);
  return { at, cuts };
}

/**
 * Admits a Responses request as its chat request: the earlier items come from previous_response_id, the
 * input is the request's with its item references resolved. With `truncation: "auto"`, a conversation
 * too long for the context loses its oldest items (instructions and leading system messages kept) until
 * it fits, as OpenAI drops items rather than failing. The fewest items to drop is found by bisection:
 * each try renders and tokenizes the whole conversation, so dropping one item a try took quadratic time.
 */
export function admitResponse(
  body: ResponseCreateRequest,
  earlier: readonly InputItem[],
  input: readonly InputItem[],
  base: BaseModelInfo,
): Admitted {
  refuseUnsupported(body);
  refuseNothingToAnswer(body);
  const conversation: InputItem[] = [...earlier, ...input];
  refuseUnansweredOutputs(conversation, earlier.length);
  const { at, cuts } = body.truncation === "auto" ? truncations(conversation) : { at: 0, cuts: [0] };
  /** The admission after dropping the items between `at` and cuts[i]: its answer, or what it threw. */
  const attempt = (i: number): { admitted: Admitted } | { error: unknown } => {
    const cut = cuts[i]!;
    const kept = cut === at ? conversation : [...conversation.slice(0, at), ...conversation.slice(cut)];
    const inputAt = Math.max(0, earlier.length - (cut - at));
    try {
      return { admitted: admitConversation(body, kept, inputAt, base) };
    } catch (error) {
      return { error };
    }
  };
  const tooLong = (outcome: { error: unknown } | { admitted: Admitted }) =>
    "error" in outcome &&
    outcome.error instanceof ApiError &&
    outcome.error.code === "context_length_exceeded";
  // Dropping more never makes the prompt longer: find the first try that is not too long.
  let outcome = attempt(0);
  if (tooLong(outcome) && cuts.length > 1) {
    let [low, high] = [1, cuts.length - 1];
    let last = attempt(high);
    if (!tooLong(last)) {
      while (low < high) {
        const mid = Math.floor((low + high) / 2);
        const tried = attempt(mid);
        if (tooLong(tried)) low = mid + 1;
        else [high, last] = [mid, tried];
      }
    }
    outcome = last;
  }
  if ("error" in outcome) throw outcome.error;
  // After admission, so a call whose arguments are not JSON is refused for that first.
  refuseUnansweredCalls(conversation, earlier.length);
  return outcome.admitted;
}

function admitConversation(
  body: ResponseCreateRequest,
  conversation: readonly InputItem[],
  inputAt: number,
  base: BaseModelInfo,
): Admitted {
  const request = chatRequestOf(body, conversation, inputAt);
  // OpenAI's own wording for the Responses API (admission would name `messages`).
  if (request.response_format?.type === "json_object" && !mentionsJson(request.messages)) {
    throw invalidRequest(
      "Response input messages must contain the word 'json' in some form to use 'text.format' of type 'json_object'.",
      "input",
    );
  }
  try {
    return admitChat(request, base);
  } catch (error) {
    if (!(error instanceof ApiError) || error.param === null) throw error;
    throw new ApiError(error.status, error.type, error.message, error.code, responsesParam(error.param));
  }
}
