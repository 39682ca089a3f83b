// OpenAI's stored chat completions: GET /v1/chat/completions lists the caller's org's completions created
// with `store: true` (oldest first unless `order=desc`; `model` and `metadata[key]=value` filter them),
// GET /v1/chat/completions/{id} reads one, POST replaces its metadata, DELETE deletes it, and
// GET /v1/chat/completions/{id}/messages lists the messages it answered. Another org's completion is not
// found (404), as one never stored is.
import type { Handler } from "hono";
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
import { ApiError, invalidBody } from "../errors.ts";
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

export function listStoredChatCompletions(deps: GatewayDeps): Handler<GatewayEnv> {
  return async (c) => {
    const query = ChatCompletionListQuery.safeParse(c.req.query());
    if (!query.success) throw invalidBody(query.error);
    return c.json(await listChatCompletions(deps.db, c.get("principal").orgId, query.data));
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
