// How many bytes one org's conversations may hold together: their metadata's and items' JSON in UTF-8,
// at most its limit (its own, else the gateway's maxOrgConversationBytes; org-storage-limit.ts).
// Conversations are kept until deleted (no retention), so without this an org's stored conversations
// would grow without end. Each conversation row carries its own count and the org row their sum
// (schema/db.ts), both changed in the transaction that writes the conversation, so the check is one
// conditional UPDATE of the org's row: two writes at once cannot both take the last room. What a response
// adds to its conversation (its input and answer) is not refused, since it was checked before the
// response ran, but it counts.
import { and, eq, sql } from "drizzle-orm";
import type { Db } from "../db/open.ts";
import { orgs } from "../schema/db.ts";
import { ApiError } from "./errors.ts";

export const DEFAULT_MAX_ORG_CONVERSATION_BYTES = 10 * 1024 ** 3;

const utf8 = new TextEncoder();

/** A value's JSON in UTF-8 bytes: what a conversation's metadata and items count. */
export function jsonBytes(value: unknown): number {
  return utf8.encode(JSON.stringify(value)).length;
}

/** What the org's conversations hold. */
export async function conversationBytesHeld(db: Pick<Db, "select">, org: string): Promise<number> {
  return (await heldAndLimit(db, org, Number.POSITIVE_INFINITY)).held;
}

/** What the org's conversations hold, and the most they may: its own limit, else `gatewayLimit`. */
async function heldAndLimit(
  db: Pick<Db, "select">,
  org: string,
  gatewayLimit: number,
): Promise<{ held: number; limit: number }> {
  const [row] = await db
    .select({ held: orgs.conversationBytes, own: orgs.conversationStorageLimit })
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
 * Within the transaction that writes the conversation: counts `bytes` (negative for what it removes) into
 * the org's conversation storage. With `room`, refuses instead when the org's conversations would pass
 * their limit; the org's row stays locked until the transaction ends.
 */
export async function chargeConversationStorage(
  tx: Pick<Db, "select" | "update">,
  org: string,
  bytes: number,
  room: ConversationRoom | null,
): Promise<void> {
  if (bytes === 0) return;
  const limit = room ? sql`coalesce(${orgs.conversationStorageLimit}, ${room.maxOrgBytes})` : null;
  const fits = limit ? sql`${orgs.conversationBytes} + ${bytes} <= ${limit}` : undefined;
  const [charged] = await tx
    .update(orgs)
    .set({ conversationBytes: sql`greatest(${orgs.conversationBytes} + ${bytes}, 0)` })
    .where(and(eq(orgs.id, org), fits))
    .returning({ held: orgs.conversationBytes });
  if (!charged && room) {
    const now = await heldAndLimit(tx, org, room.maxOrgBytes);
    throw storageExceeded(now.held, bytes, now.limit, room.param);
  }
}
