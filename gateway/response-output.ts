// The Responses API's response object: the request's settings echoed as OpenAI echoes them, the output
// items a reply makes (a reasoning model's reasoning, then a message or the function calls it is), the status a run's Final gives it, and its
// usage. The route (gateway/routes/responses.ts) and its stream events (gateway/response-events.ts) build on
// these, so a streamed response ends as the same object a non-streamed one is.
import type { ChatTokenLogprob, ToolCall } from "../schema/api.ts";
import type {
  CustomToolCallOutput,
  FunctionCallOutput,
  InputItem,
  OutputItem,
  OutputMessage,
  ReasoningOutput,
  ResponseCreateRequest,
  ResponseObject,
  ResponseUsage,
} from "../schema/responses-api.ts";
import type { Final, SamplingParams } from "../schema/wire.ts";
import { usageOf } from "./routes/inference.ts";

/** The ids of one response and of the items it may output. */
export interface ResponseIds {
  response: string;
  message: string;
  reasoning: string;
  /** The k-th function call's item id. */
  functionCall(k: number): string;
  /** The k-th custom tool call's item id. */
  customToolCall(k: number): string;
  /** The first call's call_id; toolCallsIn numbers the others `<id>_<k>`. */
  callId: string;
}

const RESPONSE_PREFIX = "resp_";

/** A response's id from its id key (the request id it was created under). */
export const responseId = (key: string) => `${RESPONSE_PREFIX}${key}`;

/** The id key a response id was made from: what its items' ids and its background job carry. */
export const responseKey = (id: string) => id.slice(RESPONSE_PREFIX.length);

export function responseIds(requestId: string): ResponseIds {
  return {
    response: responseId(requestId),
    message: `msg_${requestId}`,
    reasoning: `rs_${requestId}`,
    functionCall: (k) => (k === 0 ? `fc_${requestId}` : `fc_${requestId}_${k}`),
    customToolCall: (k) => (k === 0 ? `ctc_${requestId}` : `ctc_${requestId}_${k}`),
    callId: `call_${requestId}`,
  };
}

/**
 * The response as it starts: settings echoed (temperature and top_p as sampled, which a request that left
 * them out got from the base), no output yet, in progress.
 */
/** The id of the conversation a request names (a string, or an object with its id), or null. */
export function conversationOf(body: Pick<ResponseCreateRequest, "conversation">): { id: string } | null {
  const named = body.conversation;
  if (named == null) return null;
  return typeof named === "string" ? { id: named } : { id: named.id };
}

export function responseHead(
  body: ResponseCreateRequest,
  model: string,
  id: string,
  createdAt: number,
  store: boolean,
  sampled: Pick<SamplingParams, "temperature" | "top_p">,
): ResponseObject {
  return {
    id,
    object: "response",
    created_at: createdAt,
    completed_at: null,
    status: "in_progress",
    error: null,
    incomplete_details: null,
    model,
    instructions: body.instructions ?? null,
    output: [],
    max_output_tokens: body.max_output_tokens ?? null,
    temperature: sampled.temperature,
    top_p: sampled.top_p,
    top_logprobs: body.top_logprobs ?? 0,
    parallel_tool_calls: body.parallel_tool_calls ?? true,
    tool_choice: body.tool_choice ?? "auto",
    tools: body.tools ?? [],
    text: { format: body.text?.format ?? { type: "text" }, verbosity: "medium" },
    previous_response_id: body.previous_response_id ?? null,
    conversation: conversationOf(body),
    store,
    metadata: body.metadata ?? {},
    user: body.user ?? null,
    prompt_cache_key: body.prompt_cache_key ?? null,
    safety_identifier: body.safety_identifier ?? null,
    max_tool_calls: body.max_tool_calls ?? null,
    truncation: body.truncation ?? "disabled",
    reasoning: { effort: body.reasoning?.effort ?? null, summary: null },
    background: body.background === true,
    usage: null,
  };
}

/** What a run's end makes of its output items: incomplete when max_output_tokens cut it. */
export function itemStatusOf(final: Final): "completed" | "incomplete" {
  return final.finish_reason === "length" ? "incomplete" : "completed";
}

/** A run's end as the response's status: cut by max_output_tokens is incomplete. */
function statusOf(final: Final): Pick<ResponseObject, "status" | "incomplete_details"> {
  return itemStatusOf(final) === "incomplete"
    ? { status: "incomplete", incomplete_details: { reason: "max_output_tokens" } }
    : { status: "completed", incomplete_details: null };
}

function responseUsage(final: Final, reasoningTokens: number): ResponseUsage {
  const usage = usageOf([final]);
  return {
    input_tokens: usage.prompt_tokens,
    input_tokens_details: { cached_tokens: usage.prompt_tokens_details.cached_tokens },
    output_tokens: usage.completion_tokens,
    output_tokens_details: { reasoning_tokens: reasoningTokens },
    total_tokens: usage.total_tokens,
  };
}

/** The finished response: its output, status and usage, completed at `now` (seconds). */
export function finishedResponse(
  head: ResponseObject,
  output: OutputItem[],
  final: Final,
  now: number,
  reasoningTokens = 0,
): ResponseObject {
  return {
    ...head,
    ...statusOf(final),
    output,
    completed_at: now,
    usage: responseUsage(final, reasoningTokens),
  };
}

export function reasoningItem(id: string, text: string, status: ReasoningOutput["status"]): ReasoningOutput {
  return { type: "reasoning", id, summary: [], content: [{ type: "reasoning_text", text }], status };
}

export function messageItem(
  id: string,
  text: string,
  logprobs: ChatTokenLogprob[] | null,
  status: OutputMessage["status"],
): OutputMessage {
  return {
    type: "message",
    id,
    status,
    role: "assistant",
    content: [{ type: "output_text", text, annotations: [], ...(logprobs ? { logprobs } : {}) }],
  };
}

/** An answer's calls as output items: function calls, and custom tools' calls with their input. */
export function callItems(
  calls: readonly ToolCall[],
  ids: ResponseIds,
  status: FunctionCallOutput["status"],
): (FunctionCallOutput | CustomToolCallOutput)[] {
  return calls.map((call, k) =>
    call.type === "custom"
      ? {
          type: "custom_tool_call",
          id: ids.customToolCall(k),
          call_id: call.id,
          name: call.custom.name,
          input: call.custom.input,
          status,
        }
      : {
          type: "function_call",
          id: ids.functionCall(k),
          call_id: call.id,
          name: call.function.name,
          arguments: call.function.arguments,
          status,
        },
  );
}

/** A response's output as input items, for a later request that continues its conversation. */
export function outputAsInput(output: readonly OutputItem[]): InputItem[] {
  return output.map((item): InputItem => {
    // An item cut by max_output_tokens is listed so later (input_items, a conversation's items).
    const cut = item.status === "incomplete" ? { status: "incomplete" } : {};
    if (item.type === "reasoning")
      return { type: "reasoning", id: item.id, summary: [], content: item.content, ...cut };
    if (item.type === "function_call") {
      const { id, call_id, name } = item;
      return { type: "function_call", id, call_id, name, arguments: item.arguments, ...cut };
    }
    if (item.type === "custom_tool_call") {
      const { id, call_id, name, input } = item;
      return { type: "custom_tool_call", id, call_id, name, input, ...cut };
    }
    const text = item.content.map((part) => part.text).join("");
    return {
      type: "message",
      id: item.id,
      role: "assistant",
      content: [{ type: "output_text", text }],
      ...cut,
    };
  });
}
