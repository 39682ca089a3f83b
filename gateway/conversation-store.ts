// Where conversations (OpenAI's Conversations API) are kept: a row per conversation, scoped to its org, and
// a row per item at its position (schema/db.ts conversations, conversation_items). Items are added at the
// end, under a lock on the conversation's row, so concurrent additions never interleave or take the same
// position; a Responses request naming the conversation reads all its items in order. Every write counts
// what it adds or removes into the conversation's bytes and, last, the org's (conversation-storage-quota.ts).
// Functions of the request's database handle, as the Workers entry opens one per request.
import { and, asc, desc, eq, gt, inArray, lt, sql } from "drizzle-orm";
import type { Db } from "../db/open.ts";
import type { Metadata } from "../schema/api.ts";
import type { ListPage } from "../schema/batch-api.ts";
import type { ConversationItemsQuery, ConversationObject } from "../schema/conversations-api.ts";
import { conversationItems, conversations } from "../schema/db.ts";
import type { InputItem, ListedItem } from "../schema/responses-api.ts";
import { type ConversationRoom, chargeConversationStorage, jsonBytes } from "./conversation-storage-quota.ts";
import { ApiError, invalidRequest } from "./errors.ts";
import { listPage } from "./list-page.ts";
import { listedItem } from "./response-items.ts";

type ConversationRow = typeof conversations.$inferSelect;

function conversationObject(row: Pick<ConversationRow, "id" | "metadata" | "createdAt">): ConversationObject {
  return {
    id: row.id,
    object: "conversation",
    created_at: Math.floor(row.createdAt.getTime() / 1000),
    metadata: row.metadata as Metadata,
  };
}

const ownConversation = (orgId: string, id: string) =>
  and(eq(conversations.orgId, orgId), eq(conversations.id, id));

/**
 * A new conversation holding `items` (each with its id), in one transaction; refused (naming
 * `room.param`) when the org's conversations have no room for it.
 */
export async function createConversation(
  db: Pick<Db, "transaction">,
  orgId: string,
  created: { id: string; metadata: Metadata; items: readonly InputItem[]; createdAt: Date },
  room: ConversationRoom,
): Promise<ConversationObject> {
  const sizes = created.items.map(jsonBytes);
  const bytes = sizes.reduce((sum, n) => sum + n, jsonBytes(created.metadata));
  return db.transaction(async (tx) => {
    const [row] = await tx
      .insert(conversations)
      .values({
        id: created.id,
        orgId,
        metadata: created.metadata,
        bytes,
        nextPosition: created.items.length,
        createdAt: created.createdAt,
      })
      .returning();
    if (created.items.length > 0) {
      await tx.insert(conversationItems).values(
        created.items.map((item, position) => ({
          conversationId: created.id,
          position,
          id: item.id!,
          item,
          bytes: sizes[position]!,
          createdAt: created.createdAt,
        })),
      );
    }
    await chargeConversationStorage(tx, orgId, created.id, bytes, room);
    return conversationObject(row!);
  });
}

/** The org's conversation with this id; null when there is none (or it is another org's). */
export async function loadConversation(
  db: Pick<Db, "select">,
  orgId: string,
  id: string,
): Promise<ConversationObject | null> {
  const [row] = await db.select().from(conversations).where(ownConversation(orgId, id));
  return row ? conversationObject(row) : null;
}

/** Replaces the conversation's metadata: the conversation as it now reads; null when there is none. */
export async function setConversationMetadata(
  db: Pick<Db, "transaction">,
  orgId: string,
  id: string,
  metadata: Metadata,
): Promise<ConversationObject | null> {
  return db.transaction(async (tx) => {
    const [old] = await tx
      .select({ metadata: conversations.metadata })
      .from(conversations)
      .where(ownConversation(orgId, id))
      .for("update");
    if (!old) return null;
    const grown = jsonBytes(metadata) - jsonBytes(old.metadata);
    const [row] = await tx
      .update(conversations)
      .set({ metadata, bytes: sql`${conversations.bytes} + ${grown}` })
      .where(ownConversation(orgId, id))
      .returning();
    // Metadata is small and replaces what was there: counted, never refused.
    await chargeConversationStorage(tx, orgId, id, grown, null);
    return conversationObject(row!);
  });
}

/** Deletes the conversation and its items; false when the org has none by this id. */
export async function dropConversation(
  db: Pick<Db, "transaction">,
  orgId: string,
  id: string,
): Promise<boolean> {
  return db.transaction(async (tx) => {
    const [deleted] = await tx
      .delete(conversations)
      .where(ownConversation(orgId, id))
      .returning({ bytes: conversations.bytes });
    if (!deleted) return false;
    await chargeConversationStorage(tx, orgId, id, -deleted.bytes, null);
    return true;
  });
}

/** Every item of the org's conversation, in order; null when there is no such conversation. */
export async function allItems(
  db: Pick<Db, "select">,
  orgId: string,
  id: string,
): Promise<InputItem[] | null> {
  if (!(await loadConversation(db, orgId, id))) return null;
  const rows = await db
    .select({ item: conversationItems.item })
    .from(conversationItems)
    .where(eq(conversationItems.conversationId, id))
    .orderBy(asc(conversationItems.position));
  return rows.map((row) => row.item as InputItem);
}

/** Which of these item ids the conversation already holds. */
export async function heldIds(
  db: Pick<Db, "select">,
  conversationId: string,
  ids: readonly string[],
): Promise<Set<string>> {
  if (ids.length === 0) return new Set();
  const rows = await db
    .select({ id: conversationItems.id })
    .from(conversationItems)
    .where(
      and(eq(conversationItems.conversationId, conversationId), inArray(conversationItems.id, [...ids])),
    );
  return new Set(rows.map((row) => row.id));
}

/**
 * Refuses items whose ids are among `held` (the conversation's), or that repeat one another (400 naming the
 * item under `field`): an item's id is unique within its conversation.
 */
export function refuseTakenIds(held: ReadonlySet<string>, items: readonly InputItem[], field: string): void {
  const seen = new Set<string>();
  for (const [k, item] of items.entries()) {
    const id = item.id!;
    if (held.has(id) || seen.has(id)) {
      const where = seen.has(id)
        ? `an earlier item of ${field} has`
        : "the conversation already holds an item with";
      throw invalidRequest(`${field}.${k}: ${where} id '${id}'.`, `${field}.${k}`);
    }
    seen.add(id);
  }
}

/**
 * How large a conversation's items may grow (their JSON), four times what a request body may be: a
 * Responses request naming it reads them all, and a conversation that long is far past any model's
 * context anyway (truncation "auto" keeps only its newest items).
 */
export function maxConversationBytes(limits: { maxBodyBytes: number }): number {
  return 4 * limits.maxBodyBytes;
}

/** The JSON size of items in UTF-8 bytes, as a conversation and its org count them. */
export function itemBytes(items: readonly InputItem[]): number {
  return items.reduce((sum, item) => sum + jsonBytes(item), 0);
}

export function conversationTooLarge(id: string, maxBytes: number, param: string | null): ApiError {
  return new ApiError(
    400,
    "invalid_request_error",
    `Conversation '${id}' would hold more than ${Math.floor(maxBytes / 2 ** 20)} MiB of items, the most one may: start a new conversation.`,
    "conversation_too_large",
    param,
  );
}

/** Items to add at the end of a conversation (appendItems). */
export interface Addition {
  /** Each with its id. */
  items: readonly InputItem[];
  createdAt: Date;
  /**
   * What the items become, given which of their ids the conversation holds once its row is held (so no
   * other addition can take one meanwhile): refused (`refuseTaken`) or given new ids (`renewTaken`).
   */
  taken: (held: ReadonlySet<string>) => readonly InputItem[];
  /**
   * Refuses items that would take the conversation past `maxBytes` (conversation_too_large) or the org's
   * conversations past theirs (conversation_storage_limit_exceeded), naming `param`; a response's own
   * input and output are added without it (checked before it ran), so either may be passed by one answer.
   */
  bound?: { maxBytes: number; maxOrgBytes: number; param: string };
}

/** Refuses items whose ids the conversation holds, or that repeat one another (400 naming `field`). */
export function refuseTaken(items: readonly InputItem[], field: string): Addition["taken"] {
  return (held) => {
    refuseTakenIds(held, items, field);
    return items;
  };
}

/**
 * Adds items at the end of the org's conversation, holding its row so concurrent additions take positions
 * one after another; the items as added, or null when there is no such conversation.
 */
export async function appendItems(
  db: Pick<Db, "transaction" | "select">,
  orgId: string,
  id: string,
  addition: Addition,
): Promise<readonly InputItem[] | null> {
  const { createdAt, bound } = addition;
  if (addition.items.length === 0) return (await loadConversation(db, orgId, id)) ? [] : null;
  return db.transaction(async (tx) => {
    // Holds the conversation's row (as the update below would), so the ids are checked against what it
    // holds until this transaction ends.
    const [own] = await tx
      .select({ id: conversations.id })
      .from(conversations)
      .where(ownConversation(orgId, id))
      .for("no key update");
    if (!own) return null;
    const held = await heldIds(
      tx,
      id,
      addition.items.map((item) => item.id!),
    );
    const items = addition.taken(held);
    const sizes = items.map(jsonBytes);
    const added = sizes.reduce((sum, n) => sum + n, 0);
    // The positions after its last: after the highest held too (an index lookup), so items a gateway
    // older than next_position added during a rolling upgrade cannot make it hand out a taken position.
    const [row] = await tx
      .update(conversations)
      .set({
        bytes: sql`${conversations.bytes} + ${added}`,
        nextPosition: sql`greatest(${conversations.nextPosition}, (select coalesce(max(i.position) + 1, 0)
          from conversation_items as i where i.conversation_id = ${id})) + ${items.length}`,
      })
      .where(ownConversation(orgId, id))
      .returning({ bytes: conversations.bytes, nextPosition: conversations.nextPosition });
    if (bound && row!.bytes > bound.maxBytes) {
      throw conversationTooLarge(id, bound.maxBytes, bound.param);
    }
    const first = row!.nextPosition - items.length;
    await tx.insert(conversationItems).values(
      items.map((item, k) => ({
        conversationId: id,
        position: first + k,
        id: item.id!,
        item,
        bytes: sizes[k]!,
        createdAt,
      })),
    );
    const room = bound ? { maxOrgBytes: bound.maxOrgBytes, param: bound.param } : null;
    await chargeConversationStorage(tx, orgId, id, added, room);
    return items;
  });
}

/**
 * A page of the conversation's items, newest first unless asked otherwise, after the item `after` (400
 * when the conversation holds none by that id). The caller has checked the conversation is the org's.
 */
export async function conversationItemPage(
  db: Pick<Db, "select">,
  conversationId: string,
  query: ConversationItemsQuery,
): Promise<ListPage<ListedItem>> {
  const { position } = conversationItems;
  const conditions = [eq(conversationItems.conversationId, conversationId)];
  if (query.after !== undefined) {
    const [cursor] = await db
      .select({ position })
      .from(conversationItems)
      .where(
        and(eq(conversationItems.conversationId, conversationId), eq(conversationItems.id, query.after)),
      );
    if (!cursor) throw invalidRequest(`No item found with id '${query.after}'.`, "after");
    conditions.push(query.order === "desc" ? lt(position, cursor.position) : gt(position, cursor.position));
  }
  const rows = await db
    .select({ item: conversationItems.item })
    .from(conversationItems)
    .where(and(...conditions))
    .orderBy(query.order === "desc" ? desc(position) : asc(position))
    .limit(query.limit + 1);
  return listPage(
    rows.map((row) => listedItem(row.item as InputItem)),
    query.limit,
  );
}

/** The conversation's item with this id, as listed; null when it holds none by that id. */
export async function loadItem(
  db: Pick<Db, "select">,
  conversationId: string,
  itemId: string,
): Promise<ListedItem | null> {
  const [row] = await db
    .select({ item: conversationItems.item })
    .from(conversationItems)
    .where(and(eq(conversationItems.conversationId, conversationId), eq(conversationItems.id, itemId)));
  return row ? listedItem(row.item as InputItem) : null;
}

/**
 * The item with this id in any of the org's conversations (an item_reference names no conversation), the
 * newest where several hold one: ids the caller chose are unique only within a conversation.
 */
export async function orgItem(
  db: Pick<Db, "select">,
  orgId: string,
  itemId: string,
): Promise<InputItem | undefined> {
  const [row] = await db
    .select({ item: conversationItems.item })
    .from(conversationItems)
    .innerJoin(conversations, eq(conversations.id, conversationItems.conversationId))
    .where(and(eq(conversations.orgId, orgId), eq(conversationItems.id, itemId)))
    .orderBy(desc(conversationItems.createdAt))
    .limit(1);
  return row?.item as InputItem | undefined;
}

/** Deletes the org's conversation's item with this id; false when it holds none by that id. */
export async function dropItem(
  db: Pick<Db, "transaction">,
  orgId: string,
  conversationId: string,
  itemId: string,
): Promise<boolean> {
  return db.transaction(async (tx) => {
    const [conversation] = await tx
      .select({ id: conversations.id })
      .from(conversations)
      .where(ownConversation(orgId, conversationId))
      .for("update");
    if (!conversation) return false;
    const [deleted] = await tx
      .delete(conversationItems)
      .where(and(eq(conversationItems.conversationId, conversationId), eq(conversationItems.id, itemId)))
      .returning({ bytes: conversationItems.bytes });
    if (!deleted) return false;
    await tx
      .update(conversations)
      .set({ bytes: sql`greatest(${conversations.bytes} - ${deleted.bytes}, 0)` })
      .where(eq(conversations.id, conversationId));
    await chargeConversationStorage(tx, orgId, conversationId, -deleted.bytes, null);
    return true;
  });
}
