// OpenAI's stored chat completions as Luminet serves them: a chat completion created with `store: true` is
// kept (gateway/chat-completion-store.ts) and read back through GET /v1/chat/completions (a list, filtered by
// model and metadata), GET, POST (its metadata) and DELETE /v1/chat/completions/{id}, and
// GET /v1/chat/completions/{id}/messages (the messages it answered).
import { z } from "zod";
import type { ChatCompletion, ChatCompletionRequest, ChatRole, ToolCall } from "./api.ts";
import { Metadata } from "./api.ts";

const Limit = z.coerce.number().int().min(1).max(100).default(20);
/** Oldest first unless asked otherwise, as OpenAI lists stored chat completions and their messages. */
const Order = z.enum(["asc", "desc"]).default("asc");

const METADATA_PAIR = /^metadata\[(.+)\]$/;

/**
 * The list's query. Its metadata filter comes as `metadata[key]=value` pairs (as the SDKs write it), gathered
 * into `metadata` and checked as metadata is.
 */
export const ChatCompletionListQuery = z.preprocess(
  (query) => {
    const metadata: Record<string, unknown> = {};
    for (const [name, value] of Object.entries(query as Record<string, unknown>)) {
      const key = METADATA_PAIR.exec(name)?.[1];
      if (key !== undefined) metadata[key] = value;
    }
    return { ...(query as object), metadata };
  },
  z.object({
    limit: Limit,
    order: Order,
    after: z.string().min(1).optional(),
    model: z.string().min(1).optional(),
    metadata: Metadata,
  }),
);
export type ChatCompletionListQuery = z.infer<typeof ChatCompletionListQuery>;

export const ChatMessagesQuery = z.object({
  limit: Limit,
  order: Order,
  after: z.string().min(1).optional(),
});
export type ChatMessagesQuery = z.infer<typeof ChatMessagesQuery>;

/** The one change a stored chat completion takes: its metadata, replaced whole (null: none). */
export const ChatCompletionUpdateRequest = z.object({ metadata: Metadata.nullable() });

/**
 * What a stored completion keeps of its request, as OpenAI's stored objects echo it: the sampling it ran
 * with, its tools and response format, and `user` (as input_user).
 */
export interface StoredRequest {
  temperature: number;
  top_p: number;
  seed: number | null;
  presence_penalty: number;
  frequency_penalty: number;
  tools: ChatCompletionRequest["tools"] | null;
  tool_choice: ChatCompletionRequest["tool_choice"] | null;
  response_format: ChatCompletionRequest["response_format"] | null;
  input_user: string | null;
}

/** A stored chat completion as read back: the completion as answered, what its request was, its metadata. */
export type StoredChatCompletion = ChatCompletion & StoredRequest & { metadata: Metadata };

/** The messages it answered, as OpenAI lists them: each with an id, its content as one string. */
export interface StoredChatMessage {
  /** "<completion id>-<index of the message in the request>" */
  id: string;
  role: ChatRole;
  content: string | null;
  name: string | null;
  /**
   * The parts where the message's content was a list of them (text, or an assistant's refusal); null where
   * it was a string.
   */
  content_parts: Array<{ type: "text"; text: string } | { type: "refusal"; refusal: string }> | null;
  tool_calls?: ToolCall[];
  tool_call_id?: string;
  reasoning_content?: string;
}

export interface ChatCompletionDeleted {
  id: string;
  object: "chat.completion.deleted";
  deleted: true;
}
