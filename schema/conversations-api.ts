// OpenAI's Conversations API as Luminet serves it: a conversation holds items (messages, calls and their
// outputs, reasoning) that a Responses API request naming it starts from, and each such response adds its
// input and output to it (gateway/conversation-store.ts). Items are the Responses API's input items.
import { z } from "zod";
import { Metadata } from "./api.ts";
import { RequestItem } from "./responses-api.ts";

/** Most items one request adds, as at OpenAI. */
export const MAX_ITEMS_PER_ADD = 20;

const Items = z
  .array(RequestItem, { error: "must be a list of input items" })
  .max(MAX_ITEMS_PER_ADD, `at most ${MAX_ITEMS_PER_ADD} items at a time`);

export const ConversationCreateRequest = z.object({
  items: Items.nullable().optional(),
  metadata: Metadata.nullable().optional(),
});

/** The one change a conversation takes: its metadata, replaced whole (null: none). */
export const ConversationUpdateRequest = z.object({ metadata: Metadata.nullable() });

export const ConversationItemsCreateRequest = z.object({
  items: Items.min(1, "must hold at least one item"),
});

/** GET /v1/conversations/{id}/items's query: OpenAI's cursor page, newest first by default. */
export const ConversationItemsQuery = z.object({
  limit: z.coerce.number().int().min(1).max(100).default(20),
  order: z.enum(["asc", "desc"]).default("desc"),
  after: z.string().min(1).optional(),
});
export type ConversationItemsQuery = z.infer<typeof ConversationItemsQuery>;

export interface ConversationObject {
  /** "conv_<request id>" */
  id: string;
  object: "conversation";
  created_at: number;
  metadata: Metadata;
}

export interface ConversationDeleted {
  id: string;
  object: "conversation.deleted";
  deleted: true;
}
