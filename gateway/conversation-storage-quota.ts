// How many bytes one org's conversations may hold together: their metadata's and items' JSON in UTF-8,
// at most its limit (its own, else the gateway's maxOrgConversationBytes; org-storage-limit.ts).
// Conversations are kept until deleted (no retention), so without this an org's stored conversations
// would grow without end. Each conversation row carries its own count, and the org's total is kept in
// shards (schema/db.ts conversation_storage), changed in the transaction that writes the conversation, so
// writes to different conversations of one org seldom wait for each other's commits. Creates and adds
// through the Conversations API are checked against the total (taking turns per org once it is over half
// its limit); what a response adds to its conversation (its input and answer, checked before the response
// ran), metadata and deletes only count.
import { eq, sql } from "drizzle-orm";
import type { Db } from "../db/open.ts";
import { conversationStorage, orgs } from "../schema/db.ts";
import { ApiError } from "./errors.ts";

export const DEFAULT_MAX_ORG_CONVERSATION_BYTES = 10 * 1024 ** 3;

/** The shard a conversation counts in, from its id: in SQL, as migration 0024 counted those before it. */
const shardOf = (conversationId: string) => sql`hashtext(${conversationId}) & 15`;

const utf8 = new TextEncoder();

/** A value's JSON in UTF-8 bytes: what a conversation's metadata and items count. */
export function jsonBytes(value: unknown): number {
  return utf8.encode(JSON.stringify(value)).length;
}

/** What the org's conversations hold. */
export async function conversationBytesHeld(db: Pick<Db, "select">, org: string): Promise<number> {
  const [row] = await db
    .select({ held: sql<number>`coalesce(sum(${conversationStorage.bytes}), 0)`.mapWith(Number) })
    .from(conversationStorage)
    .where(eq(conversationStorage.orgId, org));
  return row?.held ?? 0;
}

/** What the org's conversations hold, and the most they may: its own limit, else `gatewayLimit`. */
async function heldAndLimit(
  db: Pick<Db, "select">,
  org: string,
  gatewayLimit: number,
): Promise<{ held: number; limit: number }> {
  // One round trip: the org's limit and, beside it, the sum of its shards.
  const [row] = await db
    .select({
      own: orgs.conversationStorageLimit,
      held: sql<number>`(select coalesce(sum(${conversationStorage.bytes}), 0) from ${conversationStorage}
        where ${conversationStorage.orgId} = ${org})`.mapWith(Number),
    })
    .from(orgs)
    .where(eq(orgs.id, org));
  return { held: row?.held ?? 0, limit: row?.own ?? gatewayLimit };
}

/**
 * Where an org's conversation storage is checked: the gateway's limit (the org's own, where it has one,
 * replaces it), and the request field a refusal names.
 */
export interface ConversationRoom {
  maxOrgBytes: number;
  param: string;
}

function storageExceeded(held: number, adding: number, limit: number, param: string): ApiError {
  return new ApiError(
    400,
    "invalid_request_error",
    `You have exceeded your conversation storage quota: your organization's conversations hold ${held} bytes, ` +
      `this adds ${adding}, and together they may hold ${limit}. Delete conversations you no longer ` +
      "need (DELETE /v1/conversations/{id}) first.",
    "conversation_storage_limit_exceeded",
    param,
  );
}

/** 400 conversation_storage_limit_exceeded, before any work, when `adding` bytes would not fit now. */
export async function refuseOverConversationStorage(
  db: Pick<Db, "select">,
  org: string,
  adding: number,
  room: ConversationRoom,
): Promise<void> {
  const { held, limit } = await heldAndLimit(db, org, room.maxOrgBytes);
  if (held + adding > limit) throw storageExceeded(held, adding, limit, room.param);
}

/**
 * Within the transaction that writes the conversation, as its last statement: counts `bytes` (negative
 * for what it removes) into the org's total. With `room`, refuses instead when the org's conversations
 * would pass their limit, after waiting for the org's other checked writes once it holds over half of it.
 */
export async function chargeConversationStorage(
  tx: Pick<Db, "select" | "insert" | "execute">,
  org: string,
  conversationId: string,
  bytes: number,
  room: ConversationRoom | null,
): Promise<void> {
  if (bytes === 0) return;
  if (room) {
    let { held, limit } = await heldAndLimit(tx, org, room.maxOrgBytes);
    // Far from the limit, writes do not wait for each other: those in flight at once would have to add
    // half the limit between them to pass it. Nearer, they take turns, so the last room goes to one.
    if (held + bytes > limit / 2) {
      await tx.execute(sql`select pg_advisory_xact_lock(hashtext(${`luminet-conversation-storage:${org}`}))`);
      ({ held, limit } = await heldAndLimit(tx, org, room.maxOrgBytes));
    }
    if (held + bytes > limit) throw storageExceeded(held, bytes, limit, room.param);
  }
  await tx
    .insert(conversationStorage)
    .values({ orgId: org, shard: shardOf(conversationId), bytes: Math.max(bytes, 0) })
    .onConflictDoUpdate({
      target: [conversationStorage.orgId, conversationStorage.shard],
      set: { bytes: sql`greatest(${conversationStorage.bytes} + ${bytes}, 0)` },
    });
}
