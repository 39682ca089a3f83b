// OpenAI's Responses API (`POST /v1/responses`) as Luminet serves it: the request body as a zod schema and
// the response object, output items and stream events as types (the gateway builds them; nothing parses
// them). Text in, text, reasoning and function calls out: input items of other kinds (images, files),
// hosted tools and server-side features Luminet does not have are declared so they get a clear 400.
import { z } from "zod";
import {
  type ChatTokenLogprob,
  type ErrorBody,
  ExtraSampling,
  Metadata,
  ServiceTierIn,
  textColumnString,
} from "./api.ts";

// ---------------------------------------------------------------------------------------------------------
// The request
// ---------------------------------------------------------------------------------------------------------

/** A content part of an input message; the gateway refuses the kinds that are not text. */
const ContentPart = z.object({
  type: z.string(),
  text: z.string().optional(),
  refusal: z.string().optional(),
});

const MessageItem = z.object({
  type: z.literal("message"),
  role: z.enum(["user", "assistant", "system", "developer"]),
  content: z.union([z.string(), z.array(ContentPart)], {
    error: "must be a string or a list of content parts",
  }),
  id: textColumnString().optional(),
  status: z.string().optional(),
});

/** An earlier function call of the model, sent back with its output. */
const FunctionCallItem = z.object({
  type: z.literal("function_call"),
  call_id: z.string().min(1),
  name: z.string().min(1),
  arguments: z.string(),
  id: textColumnString().optional(),
  status: z.string().optional(),
});

const FunctionCallOutputItem = z.object({
  type: z.literal("function_call_output"),
  call_id: z.string().min(1),
  output: z.union([z.string(), z.array(ContentPart)], {
    error: "must be a string or a list of content parts",
  }),
  id: textColumnString().optional(),
  status: z.string().optional(),
});

/** An earlier call of a custom tool (OpenAI's custom tools), sent back with its output. */
const CustomToolCallItem = z.object({
  type: z.literal("custom_tool_call"),
  call_id: z.string().min(1),
  name: z.string().min(1),
  input: z.string(),
  id: textColumnString().optional(),
  status: z.string().optional(),
});

const CustomToolCallOutputItem = z.object({
  type: z.literal("custom_tool_call_output"),
  call_id: z.string().min(1),
  output: z.union([z.string(), z.array(ContentPart)], {
    error: "must be a string or a list of content parts",
  }),
  id: textColumnString().optional(),
  status: z.string().optional(),
});

const TextPart = z.object({ type: z.string(), text: z.string() });

/**
 * A reasoning model's earlier reasoning, sent back with the conversation: the reasoning of the assistant turn
 * after it, which the chat template places (gateway/response-request.ts).
 */
const ReasoningItem = z.object({
  type: z.literal("reasoning"),
  summary: z.array(TextPart).optional(),
  content: z.array(TextPart).optional(),
  encrypted_content: z.string().nullable().optional(),
  id: textColumnString().optional(),
  status: z.string().optional(),
});

/** An item of a stored response (an earlier output, or an input it was sent), named by its id. */
const ItemReference = z.object({ type: z.literal("item_reference"), id: textColumnString().min(1) });

const ITEM_TYPES =
  '"message", "function_call", "function_call_output", "custom_tool_call", "custom_tool_call_output", "reasoning" or "item_reference"';

/** An item of a request's input; a message may leave out its type (OpenAI's "easy" input message). */
export const RequestItem = z.preprocess(
  (item) =>
    typeof item === "object" && item !== null && !("type" in item) ? { ...item, type: "message" } : item,
  z.discriminatedUnion(
    "type",
    [
      MessageItem,
      FunctionCallItem,
      FunctionCallOutputItem,
      CustomToolCallItem,
      CustomToolCallOutputItem,
      ReasoningItem,
      ItemReference,
    ],
    {
      error: (issue) =>
        issue.code === "invalid_union" ? `an input item's type must be ${ITEM_TYPES}` : undefined,
    },
  ),
);
export type RequestItem = z.infer<typeof RequestItem>;

/** An item of a conversation, references resolved (gateway/response-references.ts). */
export type InputItem = Exclude<RequestItem, { type: "item_reference" }>;

/** A string input is one user message. */
const Input = z.preprocess(
  (input) => (typeof input === "string" ? [{ type: "message", role: "user", content: input }] : input),
  z.array(RequestItem, { error: "must be a string or a list of input items" }),
);

const ToolName = z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, "must be 1-64 letters, digits, _ or -");

const FunctionTool = z.object({
  type: z.literal("function"),
  name: ToolName,
  description: z.string().nullable().optional(),
  parameters: z.record(z.string(), z.unknown()).nullable().optional(),
  strict: z.boolean().nullable().optional(),
});
export type FunctionTool = z.infer<typeof FunctionTool>;

/** A custom tool: its input is free text, or text of a Lark grammar or a regex (gateway/tool-calls.ts). */
const CustomTool = z.object({
  type: z.literal("custom"),
  name: ToolName,
  description: z.string().nullable().optional(),
  format: z
    .discriminatedUnion("type", [
      z.object({ type: z.literal("text") }),
      z.object({
        type: z.literal("grammar"),
        syntax: z.enum(["lark", "regex"], { error: "must be lark or regex" }),
        definition: z.string().min(1),
      }),
    ])
    .nullable()
    .optional(),
});
export type CustomTool = z.infer<typeof CustomTool>;

const TextFormat = z.discriminatedUnion(
  "type",
  [
    z.object({ type: z.literal("text") }),
    z.object({ type: z.literal("json_object") }),
    z.object({
      type: z.literal("json_schema"),
      name: ToolName,
      schema: z.record(z.string(), z.unknown()),
      description: z.string().nullish(),
      strict: z.boolean().nullable().optional(),
    }),
  ],
  {
    error: (issue) =>
      issue.code === "invalid_union"
        ? 'the format\'s type must be "text", "json_object" or "json_schema"'
        : undefined,
  },
);
export type TextFormat = z.infer<typeof TextFormat>;

const NamedTool = z.object({ type: z.enum(["function", "custom"]), name: z.string() });

const ToolChoice = z.union(
  [
    z.enum(["none", "auto", "required"]),
    NamedTool,
    z.object({
      type: z.literal("allowed_tools"),
      mode: z.enum(["auto", "required"]),
      tools: z.array(NamedTool).min(1, "must name at least one tool"),
    }),
  ],
  {
    error:
      'must be "none", "auto", "required", {"type": "function" or "custom", "name": …} or {"type": "allowed_tools", "mode", "tools"}',
  },
);
export type ToolChoice = z.infer<typeof ToolChoice>;

export const ResponseCreateRequest = z.object({
  model: z
    .string({
      error: (issue) =>
        issue.input === undefined
          ? "must be given: there is no default model (Luminet serves several bases and their adapters, each with its own tokenizer and chat template, so even a token count needs one)"
          : undefined,
    })
    .min(1),
  /**
   * Left out (or null), the model answers what conversation or previous_response_id holds as it stands
   * (items added with the Conversations API, say); without either it is a 400 (gateway/response-request.ts).
   */
  input: Input.nullable().optional(),
  /** A system message before the input (not carried over to a later previous_response_id). */
  instructions: z.string().nullable().optional(),
  max_output_tokens: z.int().positive().nullable().optional(),
  temperature: z.number().min(0).max(2).nullable().optional(),
  top_p: z.number().gt(0).max(1).nullable().optional(),
  ...ExtraSampling,
  /** As chat's (vLLM takes it here too): the same seed and request draw the same tokens. */
  seed: z.int().nullable().optional(),
  stream: z.boolean().nullable().optional(),
  tools: z
    .array(
      z.discriminatedUnion("type", [FunctionTool, CustomTool], {
        error: (issue) =>
          issue.code === "invalid_union"
            ? "only function and custom tools are supported (no hosted tools such as web_search or file_search)"
            : undefined,
      }),
    )
    .max(128, "at most 128 tools")
    .nullable()
    .optional(),
  tool_choice: ToolChoice.nullable().optional(),
  parallel_tool_calls: z.boolean().nullable().optional(),
  text: z
    .object({
      format: TextFormat.optional(),
      /** How long an answer runs, for models trained to follow it; only "medium", the default, is taken. */
      verbosity: z.enum(["low", "medium", "high"]).nullable().optional(),
    })
    .nullable()
    .optional(),
  /** With include "message.output_text.logprobs": the most likely alternatives per token (0-20). */
  top_logprobs: z.int().min(0).max(20).nullable().optional(),
  include: z.array(z.string()).nullable().optional(),
  /** Whether the response is kept for GET /v1/responses/{id} and previous_response_id (default true). */
  store: z.boolean().nullable().optional(),
  /** A stored response of the caller's org whose conversation this one continues. */
  previous_response_id: z.string().min(1, "must be a response id").nullable().optional(),
  metadata: Metadata.nullable().optional(),
  user: z.string().nullable().optional(),
  /** As in chat: the org's requests naming the same key go to the same worker (its prefix cache). */
  prompt_cache_key: z.string().max(1024, "at most 1,024 characters").nullable().optional(),
  /** The end user OpenAI asks for, to tell abuse apart; echoed, as `user` is. */
  safety_identifier: z.string().max(64, "at most 64 characters").nullable().optional(),
  /** The most calls of built-in tools: Luminet has none, so no answer comes near it; echoed. */
  max_tool_calls: z.int().min(1).nullable().optional(),
  /** "auto": a conversation too long for the context loses its oldest items instead of failing. */
  truncation: z.enum(["auto", "disabled"]).nullable().optional(),
  /** Answered at once as queued, run by a Node gateway's batch runner; GET /v1/responses/{id} polls it. */
  background: z.boolean().nullable().optional(),
  service_tier: ServiceTierIn.nullable().optional(),
  /**
   * A conversation of the caller's org (the Conversations API, gateway/conversation-store.ts): its items
   * come before the input, and the input and output are added to it once the response ends.
   */
  conversation: z
    .union([z.string().min(1), z.object({ id: z.string().min(1) })], {
      error: 'must be a conversation id or {"id": <conversation id>}',
    })
    .nullable()
    .optional(),
  // Declared only to be refused (gateway/response-request.ts): Luminet does not do these.
  prompt: z.unknown().optional(),
  reasoning: z.object({ effort: z.string().nullable().optional() }).loose().nullable().optional(),
});
export type ResponseCreateRequest = z.infer<typeof ResponseCreateRequest>;

/** The include value that asks for the output text's logprobs. */
export const INCLUDE_LOGPROBS = "message.output_text.logprobs";

/**
 * Every include value OpenAI takes; another is refused (gateway/response-request.ts). Those of hosted
 * tools and images ask for nothing a request Luminet runs can hold (such tools and content are refused).
 * reasoning.encrypted_content, which clients ask for with store false to send reasoning back, asks for
 * nothing more: Luminet's reasoning items carry their text, and sent back as they are they are taken.
 */
export const INCLUDABLE = [
  "file_search_call.results",
  "web_search_call.results",
  "web_search_call.action.sources",
  "message.input_image.image_url",
  "computer_call_output.output.image_url",
  "code_interpreter_call.outputs",
  "reasoning.encrypted_content",
  INCLUDE_LOGPROBS,
] as const;

// ---------------------------------------------------------------------------------------------------------
// The response and its stream
// ---------------------------------------------------------------------------------------------------------

export interface OutputText {
  type: "output_text";
  text: string;
  annotations: [];
  logprobs?: ChatTokenLogprob[];
}

export interface OutputMessage {
  type: "message";
  id: string;
  status: "in_progress" | "completed" | "incomplete";
  role: "assistant";
  content: OutputText[];
}

export interface FunctionCallOutput {
  type: "function_call";
  id: string;
  call_id: string;
  name: string;
  arguments: string;
  status: "in_progress" | "completed" | "incomplete";
}

export interface CustomToolCallOutput {
  type: "custom_tool_call";
  id: string;
  call_id: string;
  name: string;
  input: string;
  status: "in_progress" | "completed" | "incomplete";
}

/** A reasoning model's reasoning (gateway/reasoning.ts): its text, no summary. */
export interface ReasoningText {
  type: "reasoning_text";
  text: string;
}

export interface ReasoningOutput {
  type: "reasoning";
  id: string;
  summary: [];
  content: ReasoningText[];
  status: "in_progress" | "completed" | "incomplete";
}

export type OutputItem = OutputMessage | FunctionCallOutput | CustomToolCallOutput | ReasoningOutput;

export interface ResponseUsage {
  input_tokens: number;
  /** The input tokens the worker's prefix cache covered, billed at the cached input price. */
  input_tokens_details: { cached_tokens: number };
  output_tokens: number;
  output_tokens_details: { reasoning_tokens: number };
  total_tokens: number;
}

export type ResponseStatus = "queued" | "in_progress" | "completed" | "incomplete" | "failed" | "cancelled";

export interface ResponseObject {
  id: string;
  object: "response";
  created_at: number;
  /** The tier it was served at, present when the request named one. */
  service_tier?: "default" | "flex" | "priority";
  completed_at: number | null;
  status: ResponseStatus;
  error: { code: string; message: string } | null;
  incomplete_details: { reason: "max_output_tokens" } | null;
  model: string;
  instructions: string | null;
  output: OutputItem[];
  max_output_tokens: number | null;
  temperature: number;
  top_p: number;
  top_logprobs: number;
  parallel_tool_calls: boolean;
  tool_choice: ToolChoice;
  tools: (FunctionTool | CustomTool)[];
  text: { format: TextFormat; verbosity: "medium" };
  previous_response_id: string | null;
  /** The conversation the response belongs to: its input and output were added to it. */
  conversation: { id: string } | null;
  store: boolean;
  metadata: Record<string, string>;
  user: string | null;
  prompt_cache_key: string | null;
  safety_identifier: string | null;
  max_tool_calls: number | null;
  truncation: "auto" | "disabled";
  /** reasoning.effort as the request gave it. */
  reasoning: { effort: string | null; summary: null };
  background: boolean;
  usage: ResponseUsage | null;
}

/** A listed item's status: an output item cut by max_output_tokens stays incomplete; the rest completed. */
export type ItemStatus = "completed" | "incomplete";

/** A conversation item as GET /v1/responses/{id}/input_items lists it. */
export type ListedItem =
  | {
      id: string;
      type: "message";
      role: "user" | "assistant" | "system" | "developer";
      status: ItemStatus;
      content: (
        | { type: "input_text"; text: string }
        | { type: "output_text"; text: string; annotations: [] }
        | { type: "refusal"; refusal: string }
      )[];
    }
  | {
      id: string;
      type: "function_call";
      call_id: string;
      name: string;
      arguments: string;
      status: ItemStatus;
    }
  | { id: string; type: "function_call_output"; call_id: string; output: string; status: ItemStatus }
  | {
      id: string;
      type: "custom_tool_call";
      call_id: string;
      name: string;
      input: string;
      status: ItemStatus;
    }
  | { id: string; type: "custom_tool_call_output"; call_id: string; output: string; status: ItemStatus }
  | {
      id: string;
      type: "reasoning";
      summary: { type: string; text: string }[];
      content: { type: string; text: string }[];
      status: ItemStatus;
    };

/** GET /v1/responses/{id}/input_items's query: OpenAI's cursor page, newest first by default. */
/** GET /v1/responses/{id}: `stream=true` follows a background response created streamed, from after `starting_after`. */
export const RetrieveQuery = z.object({
  stream: z.enum(["true", "false"], { error: 'must be "true" or "false"' }).optional(),
  starting_after: z.coerce.number().int().min(-1).optional(),
});

export const InputItemsQuery = z.object({
  limit: z.coerce.number().int().min(1).max(100).default(20),
  order: z.enum(["asc", "desc"]).default("desc"),
  after: z.string().optional(),
});

/** The events of a streamed response, in OpenAI's shapes (each also carries its sequence_number). */
export type ResponseEvent =
  | { type: "response.created" | "response.queued" | "response.in_progress"; response: ResponseObject }
  | { type: "response.completed" | "response.incomplete" | "response.failed"; response: ResponseObject }
  | {
      type: "response.output_item.added" | "response.output_item.done";
      output_index: number;
      item: OutputItem;
    }
  | {
      type: "response.content_part.added" | "response.content_part.done";
      item_id: string;
      output_index: number;
      content_index: number;
      part: OutputText | ReasoningText;
    }
  | {
      type: "response.reasoning_text.delta";
      item_id: string;
      output_index: number;
      content_index: number;
      delta: string;
    }
  | {
      type: "response.reasoning_text.done";
      item_id: string;
      output_index: number;
      content_index: number;
      text: string;
    }
  | {
      type: "response.output_text.delta";
      item_id: string;
      output_index: number;
      content_index: number;
      delta: string;
      logprobs: ChatTokenLogprob[];
    }
  | {
      type: "response.output_text.done";
      item_id: string;
      output_index: number;
      content_index: number;
      text: string;
      logprobs: ChatTokenLogprob[];
    }
  | { type: "response.custom_tool_call_input.delta"; item_id: string; output_index: number; delta: string }
  | { type: "response.custom_tool_call_input.done"; item_id: string; output_index: number; input: string }
  | { type: "response.function_call_arguments.delta"; item_id: string; output_index: number; delta: string }
  | {
      type: "response.function_call_arguments.done";
      item_id: string;
      output_index: number;
      name: string;
      arguments: string;
    };

/**
 * An error after the stream's headers: OpenAI's error event, with the error body beside its fields, which
 * is what makes the openai SDKs raise it as an APIError.
 */
export interface ResponseErrorEvent {
  type: "error";
  code: string | null;
  message: string;
  param: string | null;
  error: ErrorBody["error"];
}
