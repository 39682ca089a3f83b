// OpenAI's Conversations API: POST /v1/conversations creates a conversation (with up to 20 first items),
// GET, POST (its metadata) and DELETE /v1/conversations/{id} read, change and delete it, and
// /v1/conversations/{id}/items adds items (POST), lists them (GET, newest first unless asked otherwise),
// and reads or deletes one (GET, DELETE …/items/{item_id}). A Responses API request naming the
// conversation starts from its items and adds its input and output to it (routes/responses.ts).
// Conversations belong to the caller's org: another org's is not found (404).
import type { Context, Handler } from "hono";
import type { ListPage } from "../../schema/batch-api.ts";
import {
  ConversationCreateRequest,
  type ConversationDeleted,
  ConversationItemsCreateRequest,
  ConversationItemsQuery,
  type ConversationObject,
  ConversationUpdateRequest,
} from "../../schema/conversations-api.ts";
import type { InputItem, ListedItem, RequestItem } from "../../schema/responses-api.ts";
import type { GatewayEnv } from "../context.ts";
import {
  appendItems,
  conversationItemPage,
  createConversation,
  dropConversation,
  dropItem,
  loadConversation,
  loadItem,
  maxConversationBytes,
  refuseTaken,
  refuseTakenIds,
  setConversationMetadata,
} from "../conversation-store.ts";
import type { GatewayDeps } from "../deps.ts";
import { ApiError, conversationNotFound, invalidBody } from "../errors.ts";
import { listPage } from "../list-page.ts";
import { readBody } from "../request-body.ts";
import { listedItem, withItemIds } from "../response-items.ts";
import { maxReferencedBytes, resolveReferences } from "../response-references.ts";
import { checkItems } from "../response-request.ts";

function itemNotFound(id: string): ApiError {
  return new ApiError(
    404,
    "invalid_request_error",
    `Item with id '${id}' not found.`,
    "not_found",
    "item_id",
  );
}

/** The caller's org's conversation named by the path, or 404. */
async function ownConversation(c: Context<GatewayEnv>, deps: GatewayDeps): Promise<ConversationObject> {
  const id = c.req.param("id")!;
  const conversation = await loadConversation(deps.db, c.get("principal").orgId, id);
  if (!conversation) throw conversationNotFound(id);
  return conversation;
}

/**
 * A request's items as a conversation keeps them: references resolved, text only, each with an id (this
 * request's where it had none).
 */
async function itemsToAdd(
  c: Context<GatewayEnv>,
  deps: GatewayDeps,
  items: readonly RequestItem[],
): Promise<InputItem[]> {
  const resolved = await resolveReferences(
    deps.db,
    c.get("principal").orgId,
    items,
    maxReferencedBytes(deps),
    "items",
  );
  checkItems(resolved, "items");
  return withItemIds(resolved, c.get("requestId"));
}

/** The items a request added, as one page (the whole of them). */
function itemList(items: readonly InputItem[]): ListPage<ListedItem> {
  return listPage(items.map(listedItem), items.length);
}

export function createConversationRoute(deps: GatewayDeps): Handler<GatewayEnv> {
  return async (c) => {
    const body = await readBody(c, ConversationCreateRequest);
    const id = `conv_${c.get("requestId")}`;
    const items = await itemsToAdd(c, deps, body.items ?? []);
    // A new conversation holds nothing yet: only repeats among the items themselves are refused.
    refuseTakenIds(new Set(), items, "items");
    const conversation = await createConversation(
      deps.db,
      c.get("principal").orgId,
      {
        id,
        metadata: body.metadata ?? {},
        items,
        createdAt: new Date(deps.now()),
      },
      { maxOrgBytes: deps.limits.maxOrgConversationBytes, param: "items" },
    );
    return c.json(conversation);
  };
}

export function retrieveConversationRoute(deps: GatewayDeps): Handler<GatewayEnv> {
  return async (c) => c.json(await ownConversation(c, deps));
}

export function updateConversationRoute(deps: GatewayDeps): Handler<GatewayEnv> {
  return async (c) => {
    const id = c.req.param("id")!;
    const body = await readBody(c, ConversationUpdateRequest);
    const updated = await setConversationMetadata(deps.db, c.get("principal").orgId, id, body.metadata ?? {});
    if (!updated) throw conversationNotFound(id);
    return c.json(updated);
  };
}

export function deleteConversationRoute(deps: GatewayDeps): Handler<GatewayEnv> {
  return async (c) => {
    const id = c.req.param("id")!;
    if (!(await dropConversation(deps.db, c.get("principal").orgId, id))) throw conversationNotFound(id);
    const deleted: ConversationDeleted = { id, object: "conversation.deleted", deleted: true };
    return c.json(deleted);
  };
}

export function addItemsRoute(deps: GatewayDeps): Handler<GatewayEnv> {
  return async (c) => {
    const { id } = await ownConversation(c, deps);
    const body = await readBody(c, ConversationItemsCreateRequest);
    const items = await itemsToAdd(c, deps, body.items);
    const bound = {
      maxBytes: maxConversationBytes(deps.limits),
      maxOrgBytes: deps.limits.maxOrgConversationBytes,
      param: "items",
    };
    const added = await appendItems(deps.db, c.get("principal").orgId, id, {
      items,
      createdAt: new Date(deps.now()),
      taken: refuseTaken(items, "items"),
      bound,
    });
    if (!added) throw conversationNotFound(id);
    return c.json(itemList(added));
  };
}

export function listItemsRoute(deps: GatewayDeps): Handler<GatewayEnv> {
  return async (c) => {
    const query = ConversationItemsQuery.safeParse(c.req.query());
    if (!query.success) throw invalidBody(query.error);
    const { id } = await ownConversation(c, deps);
    return c.json(await conversationItemPage(deps.db, id, query.data));
  };
}

export function retrieveItemRoute(deps: GatewayDeps): Handler<GatewayEnv> {
  return async (c) => {
    const { id } = await ownConversation(c, deps);
    const itemId = c.req.param("item_id")!;
    const item = await loadItem(deps.db, id, itemId);
    if (!item) throw itemNotFound(itemId);
    return c.json(item);
  };
}

/** Deletes one item; answers the conversation, as OpenAI does. */
export function deleteItemRoute(deps: GatewayDeps): Handler<GatewayEnv> {
  return async (c) => {
    const conversation = await ownConversation(c, deps);
    const itemId = c.req.param("item_id")!;
    if (!(await dropItem(deps.db, c.get("principal").orgId, conversation.id, itemId)))
      throw itemNotFound(itemId);
    return c.json(conversation);
  };
}
