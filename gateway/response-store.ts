// Where the Responses API keeps responses (those not created with `store: false`): one row per response in
// the gateway's database (schema/db.ts stored_responses), scoped to its org, holding the response object
// and the conversation it answered, so previous_response_id continues it with one read. Functions of the
// request's database handle, as the Workers entry opens one per request.
import { and, eq, inArray, lt, ne, sql } from "drizzle-orm";
import type { Db } from "../db/open.ts";
import { storedResponses } from "../schema/db.ts";
import type { InputItem, ResponseObject } from "../schema/responses-api.ts";
import { outputAsInput } from "./response-output.ts";

export interface KeptResponse {
  response: ResponseObject;
  /** Every input item the response answered, earlier responses' items and outputs included. */
  conversation: InputItem[];
}

/** Stores a response; `db` may be a transaction's handle. */
export async function saveResponse(db: Pick<Db, "insert">, orgId: string, kept: KeptResponse): Promise<void> {
  await db.insert(storedResponses).values({
    id: kept.response.id,
    orgId,
    response: kept.response,
    conversation: kept.conversation,
    // The gateway's clock, as the response's created_at and the retention sweep read it.
    createdAt: new Date(kept.response.created_at * 1000),
  });
}

/**
 * Stores a background response's run over the response stored queued, keeping that one's created_at. A
 * response cancelled or deleted meanwhile is left as it is (the answer is dropped); false then.
 */
export async function saveBackgroundRun(db: Db, orgId: string, kept: KeptResponse): Promise<boolean> {
  const updated = await db
    .update(storedResponses)
    .set({
      response: sql`jsonb_set(${JSON.stringify(kept.response)}::jsonb, '{created_at}', ${storedResponses.response} -> 'created_at')`,
      conversation: kept.conversation,
    })
    .where(
      and(
        eq(storedResponses.orgId, orgId),
        eq(storedResponses.id, kept.response.id),
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
    .set({ response: sql`${storedResponses.response} || ${JSON.stringify(patch)}::jsonb` })
    .where(
      and(
        eq(storedResponses.id, id),
        inArray(sql`${storedResponses.response} ->> 'status'`, ["queued", "in_progress"]),
      ),
    )
    .returning({ id: storedResponses.id });
  return updated.length > 0;
}

/** The org's response with this id; null when there is none (or it is another org's). */
export async function loadResponse(db: Db, orgId: string, id: string): Promise<KeptResponse | null> {
  const [row] = await db
    .select()
    .from(storedResponses)
    .where(and(eq(storedResponses.orgId, orgId), eq(storedResponses.id, id)));
  if (!row) return null;
  return { response: row.response as ResponseObject, conversation: row.conversation as InputItem[] };
}

/** False when the org has no response with this id. */
export async function dropResponse(db: Db, orgId: string, id: string): Promise<boolean> {
  const deleted = await db
    .delete(storedResponses)
    .where(and(eq(storedResponses.orgId, orgId), eq(storedResponses.id, id)))
    .returning({ id: storedResponses.id });
  return deleted.length > 0;
}

/** Deletes up to `limit` responses stored before `before`; returns how many. */
export async function sweepResponses(db: Db, before: Date, limit: number): Promise<number> {
  const expired = db
    .select({ id: storedResponses.id })
    .from(storedResponses)
    .where(lt(storedResponses.createdAt, before))
    .limit(limit);
  const deleted = await db
    .delete(storedResponses)
    .where(inArray(storedResponses.id, expired))
    .returning({ id: storedResponses.id });
  return deleted.length;
}

/** The conversation a later request continues: what the response answered, then its output. */
export function continuedConversation(kept: KeptResponse): InputItem[] {
  return [...kept.conversation, ...outputAsInput(kept.response.output)];
}
