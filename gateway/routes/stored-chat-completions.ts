// OpenAI's stored chat completions: GET /v1/chat/completions lists the caller's org's completions created
// with `store: true` (oldest first unless `order=desc`; `model` and `metadata[key]=value` filter them),
// GET /v1/chat/completions/{id} reads one, POST replaces its metadata, DELETE deletes it, and
// GET /v1/chat/completions/{id}/messages lists the messages it answered. Another org's completion is not
// found (404), as one never stored is.
import type { Handler } from "hono";
import type { Metadata } from "../../schema/api.ts";
import {
  type ChatCompletionDeleted,
  ChatCompletionListQuery,
  ChatCompletionUpdateRequest,
  ChatMessagesQuery,
} from "../../schema/stored-chat-api.ts";
import {
  chatMessagePage,
  dropChatCompletion,
  listChatCompletions,
  loadChatCompletion,
  setChatMetadata,
} from "../chat-completion-store.ts";
import type { GatewayEnv } from "../context.ts";
import type { GatewayDeps } from "../deps.ts";
import { ApiError, invalidBody, invalidRequest } from "../errors.ts";
import { readBody } from "../request-body.ts";

function completionNotFound(id: string): ApiError {
  return new ApiError(
    404,
    "invalid_request_error",
    `No chat completion found with id '${id}'. Only chat completions created with store: true are kept.`,
    "not_found",
    "completion_id",
  );
}

const METADATA_KEY = /^metadata\[(.+)\]$/;

/** The list's `metadata[key]=value` pairs, checked as metadata is (16 pairs, key and value lengths). */
function metadataFilter(query: Record<string, string>): Metadata {
  const pairs: Record<string, string> = {};
  for (const [name, value] of Object.entries(query)) {
    const key = METADATA_KEY.exec(name)?.[1];
    if (key !== undefined) pairs[key] = value;
  }
  if (Object.keys(pairs).length > 16)
    throw invalidRequest("At most 16 metadata pairs filter a list.", "metadata");
  for (const [key, value] of Object.entries(pairs)) {
    if (key.length > 64 || value.length > 512) {
      throw invalidRequest(
        `Invalid metadata filter '${key}': keys hold at most 64 characters, values at most 512.`,
        "metadata",
      );
    }
  }
  return pairs;
}

export function listStoredChatCompletions(deps: GatewayDeps): Handler<GatewayEnv> {
  return async (c) => {
    const raw = c.req.query();
    const query = ChatCompletionListQuery.safeParse(raw);
    if (!query.success) throw invalidBody(query.error);
    const page = await listChatCompletions(deps.db, c.get("principal").orgId, {
      ...query.data,
      metadata: metadataFilter(raw),
    });
    return c.json(page);
  };
}

export function retrieveStoredChatCompletion(deps: GatewayDeps): Handler<GatewayEnv> {
  return async (c) => {
    const id = c.req.param("id")!;
    const stored = await loadChatCompletion(deps.db, c.get("principal").orgId, id);
    if (!stored) throw completionNotFound(id);
    return c.json(stored);
  };
}

export function updateStoredChatCompletion(deps: GatewayDeps): Handler<GatewayEnv> {
  return async (c) => {
    const id = c.req.param("id")!;
    const body = await readBody(c, ChatCompletionUpdateRequest);
    const updated = await setChatMetadata(deps.db, c.get("principal").orgId, id, body.metadata ?? {});
    if (!updated) throw completionNotFound(id);
    return c.json(updated);
  };
}

export function deleteStoredChatCompletion(deps: GatewayDeps): Handler<GatewayEnv> {
  return async (c) => {
    const id = c.req.param("id")!;
    if (!(await dropChatCompletion(deps.db, c.get("principal").orgId, id))) throw completionNotFound(id);
    const deleted: ChatCompletionDeleted = { id, object: "chat.completion.deleted", deleted: true };
    return c.json(deleted);
  };
}

export function listStoredChatMessages(deps: GatewayDeps): Handler<GatewayEnv> {
  return async (c) => {
    const id = c.req.param("id")!;
    const query = ChatMessagesQuery.safeParse(c.req.query());
    if (!query.success) throw invalidBody(query.error);
    const page = await chatMessagePage(deps.db, c.get("principal").orgId, id, query.data);
    if (!page) throw completionNotFound(id);
    return c.json(page);
  };
}
