// Where the Responses API keeps responses (those not created with `store: false`): one row per response in
// the gateway's database (schema/db.ts stored_responses), scoped to its org, holding the response object
// and the input items it added. A response that continues another (previous_response_id) links to it, so
// its whole conversation is rebuilt from its chain's rows, read together by the ids each row lists; deleting a
// response (through the API or past the retention) first writes the whole conversation into the responses
// that continue it, so they never lose their past. Functions of the request's database handle, as the
// Workers entry opens one per request.
import { and, asc, eq, inArray, lt, ne, notInArray, sql } from "drizzle-orm";
import type { Db } from "../db/open.ts";
import { storedResponses } from "../schema/db.ts";
import type { InputItem, ResponseObject } from "../schema/responses-api.ts";
import { storableJson } from "../schema/text-safe-jsonb.ts";
import { outputAsInput } from "./response-output.ts";

export interface KeptResponse {
  response: ResponseObject;
  /** Every input item the response answered, earlier responses' items and outputs included. */
  conversation: InputItem[];
  /** The ids of the responses before it in its chain, oldest first. */
  ancestors: string[];
}

/** A response to store: the items it added, and the response it continues (null: none). */
export interface NewResponse {
  response: ResponseObject;
  items: InputItem[];
  previous: KeptResponse | null;
}

type Handle = Pick<Db, "select" | "update" | "delete" | "insert">;

/**
 * Stores a response, linked to the one it continues while that one is stored (a share lock holds a delete
 * of it back until this row is in, so the delete writes the conversation into it); one deleted meanwhile
 * leaves the whole conversation in this row. `db` may be a transaction's handle.
 */
export async function saveResponse(
  db: Pick<Db, "insert" | "transaction">,
  orgId: string,
  saved: NewResponse,
): Promise<void> {
  const { response, items, previous } = saved;
  const row = {
    id: response.id,
    orgId,
    response,
    conversation: items,
    // The gateway's clock, as the response's created_at and the retention sweep read it.
    createdAt: new Date(response.created_at * 1000),
  };
  // A first turn links to nothing: one insert, no transaction.
  if (!previous) {
    await db.insert(storedResponses).values(row);
    return;
  }
  await db.transaction(async (tx) => {
    const linked =
      (
        await tx
          .select({ id: storedResponses.id })
          .from(storedResponses)
          .where(and(eq(storedResponses.orgId, orgId), eq(storedResponses.id, previous.response.id)))
          .for("share")
      ).length > 0;
    await tx.insert(storedResponses).values(
      linked
        ? {
            ...row,
            previousId: previous.response.id,
            ancestors: [...previous.ancestors, previous.response.id],
          }
        : { ...row, conversation: [...continuedConversation(previous), ...items] },
    );
  });
}

/** The created_at (Unix seconds) of the org's stored response with this id; null when there is none. */
export async function storedCreatedAt(
  db: Pick<Db, "select">,
  orgId: string,
  id: string,
): Promise<number | null> {
  const [row] = await db
    .select({
      createdAt: sql<number>`(${storedResponses.response} ->> 'created_at')::bigint`.mapWith(Number),
    })
    .from(storedResponses)
    .where(and(eq(storedResponses.orgId, orgId), eq(storedResponses.id, id)));
  return row?.createdAt ?? null;
}

/**
 * Stores a background response's run over the response stored queued (the run's response carries the
 * created_at it was queued with: storedCreatedAt). A
 * response cancelled or deleted meanwhile is left as it is (the answer is dropped); false then. Its items
 * and link were stored with it, queued, and a delete of what it continues may since have written the whole
 * conversation in, so only the response changes, unless `itemsAsRun`: a response in a conversation read the
 * conversation again when it ran, and keeps the items it answered.
 */
export async function saveBackgroundRun(
  db: Pick<Db, "update">,
  orgId: string,
  saved: NewResponse,
  itemsAsRun = false,
): Promise<boolean> {
  const updated = await db
    .update(storedResponses)
    .set({
      response: sql`${storableJson(saved.response)}::jsonb`,
      ...(itemsAsRun ? { conversation: saved.items } : {}),
    })
    .where(
      and(
        eq(storedResponses.orgId, orgId),
        eq(storedResponses.id, saved.response.id),
        ne(sql`${storedResponses.response} ->> 'status'`, "cancelled"),
      ),
    )
    .returning({ id: storedResponses.id });
  return updated.length > 0;
}

/**
 * Moves a background response that has not ended on: to in_progress when its run starts, to failed or
 * cancelled (with `error`) when it cannot end otherwise. An ended response is left as it is; false then.
 */
export async function markBackground(
  db: Pick<Db, "update">,
  id: string,
  status: "in_progress" | "failed" | "cancelled",
  error: { code: string; message: string } | null = null,
): Promise<boolean> {
  const patch = { status, ...(error ? { error } : {}) };
  const updated = await db
    .update(storedResponses)
    .set({ response: sql`${storedResponses.response} || ${storableJson(patch)}::jsonb` })
    .where(
      and(
        eq(storedResponses.id, id),
        inArray(sql`${storedResponses.response} ->> 'status'`, ["queued", "in_progress"]),
      ),
    )
    .returning({ id: storedResponses.id });
  return updated.length > 0;
}

type StoredRow = typeof storedResponses.$inferSelect;

/** The org's response with this id, its whole conversation rebuilt; null when there is none (or it is another org's). */
export async function loadResponse(
  db: Pick<Db, "select">,
  orgId: string,
  id: string,
): Promise<KeptResponse | null> {
  const [last] = await db
    .select()
    .from(storedResponses)
    .where(and(eq(storedResponses.orgId, orgId), eq(storedResponses.id, id)));
  if (!last) return null;
  const rows =
    last.previousId === null
      ? []
      : await db
          .select()
          .from(storedResponses)
          .where(and(eq(storedResponses.orgId, orgId), inArray(storedResponses.id, last.ancestors)));
  const byId = new Map(rows.map((row) => [row.id, row]));
  // Back along the links to the row that holds the start of the conversation.
  const earlier: StoredRow[] = [];
  for (let row = last; row.previousId !== null; ) {
    const previous = byId.get(row.previousId);
    if (!previous) break;
    earlier.unshift(previous);
    row = previous;
  }
  const own = kept(last);
  const conversation = [...earlier.flatMap((row) => continuedConversation(kept(row))), ...own.conversation];
  return { ...own, conversation, ancestors: last.ancestors };
}

/**
 * The items the org's response with this id added and answered (its own input items, then its output), by
 * one read; empty when there is none. Item references name these.
 */
export async function ownItems(db: Pick<Db, "select">, orgId: string, id: string): Promise<InputItem[]> {
  const [row] = await db
    .select({ response: storedResponses.response, conversation: storedResponses.conversation })
    .from(storedResponses)
    .where(and(eq(storedResponses.orgId, orgId), eq(storedResponses.id, id)));
  return row ? continuedConversation(kept(row)) : [];
}

/**
 * Before the rows `ids` go: each response that continues one of them and stays gets its whole
 * conversation written into its own row, and no longer links back.
 */
async function detachSuccessors(tx: Handle, ids: readonly string[]): Promise<void> {
  if (ids.length === 0) return;
  const successors = await tx
    .select({ id: storedResponses.id, orgId: storedResponses.orgId })
    .from(storedResponses)
    .where(and(inArray(storedResponses.previousId, [...ids]), notInArray(storedResponses.id, [...ids])));
  for (const { id, orgId } of successors) {
    const kept = await loadResponse(tx, orgId, id);
    await tx
      .update(storedResponses)
      .set({ conversation: kept!.conversation, previousId: null, ancestors: [] })
      .where(eq(storedResponses.id, id));
  }
}

/** False when the org has no response with this id. */
export async function dropResponse(db: Db, orgId: string, id: string): Promise<boolean> {
  return db.transaction(async (tx) => {
    const [row] = await tx
      .select({ id: storedResponses.id })
      .from(storedResponses)
      .where(and(eq(storedResponses.orgId, orgId), eq(storedResponses.id, id)))
      .for("update");
    if (!row) return false;
    await detachSuccessors(tx, [id]);
    await tx.delete(storedResponses).where(eq(storedResponses.id, id));
    return true;
  });
}

/** Deletes up to `limit` responses stored before `before`; returns how many. */
export async function sweepResponses(db: Db, before: Date, limit: number): Promise<number> {
  return db.transaction(async (tx) => {
    const expired = await tx
      .select({ id: storedResponses.id })
      .from(storedResponses)
      .where(lt(storedResponses.createdAt, before))
      // Oldest first: a chain's turns go together, so few successors are written whole only to go next.
      .orderBy(asc(storedResponses.createdAt))
      .limit(limit)
      .for("update", { skipLocked: true });
    const ids = expired.map((row) => row.id);
    if (ids.length === 0) return 0;
    await detachSuccessors(tx, ids);
    const deleted = await tx
      .delete(storedResponses)
      .where(inArray(storedResponses.id, ids))
      .returning({ id: storedResponses.id });
    return deleted.length;
  });
}

/**
 * The conversation a later request continues: what the response answered, then its output (of a stored
 * row: the items it added, then its output).
 */
export function continuedConversation(kept: Pick<KeptResponse, "response" | "conversation">): InputItem[] {
  return [...kept.conversation, ...outputAsInput(kept.response.output)];
}

/** A stored row's response and items, typed. */
function kept(
  row: Pick<StoredRow, "response" | "conversation">,
): Pick<KeptResponse, "response" | "conversation"> {
  return { response: row.response as ResponseObject, conversation: row.conversation as InputItem[] };
}
