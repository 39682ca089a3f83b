// Where the Responses API keeps responses (those not created with `store: false`): one row per response in
// the gateway's database (schema/db.ts stored_responses), scoped to its org, holding the response object
// and the conversation it answered, so previous_response_id continues it with one read.
import { and, eq } from "drizzle-orm";
import type { Db } from "../db/open.ts";
import { storedResponses } from "../schema/db.ts";
import type { InputItem, ResponseObject } from "../schema/responses-api.ts";
import { outputAsInput } from "./response-output.ts";

export interface KeptResponse {
  response: ResponseObject;
  /** Every input item the response answered, earlier responses' items and outputs included. */
  conversation: InputItem[];
}

export interface ResponseStore {
  save(orgId: string, stored: KeptResponse): Promise<void>;
  /** The org's response with this id; null when there is none (or another org's). */
  get(orgId: string, id: string): Promise<KeptResponse | null>;
  /** False when the org has no response with this id. */
  delete(orgId: string, id: string): Promise<boolean>;
}

export class DbResponseStore implements ResponseStore {
  constructor(private readonly db: Db) {}

  async save(orgId: string, stored: KeptResponse): Promise<void> {
    await this.db.insert(storedResponses).values({
      id: stored.response.id,
      orgId,
      response: stored.response,
      conversation: stored.conversation,
    });
  }

  async get(orgId: string, id: string): Promise<KeptResponse | null> {
    const [row] = await this.db
      .select()
      .from(storedResponses)
      .where(and(eq(storedResponses.orgId, orgId), eq(storedResponses.id, id)));
    if (!row) return null;
    return { response: row.response as ResponseObject, conversation: row.conversation as InputItem[] };
  }

  async delete(orgId: string, id: string): Promise<boolean> {
    const deleted = await this.db
      .delete(storedResponses)
      .where(and(eq(storedResponses.orgId, orgId), eq(storedResponses.id, id)))
      .returning({ id: storedResponses.id });
    return deleted.length > 0;
  }
}

/** The conversation a later request continues: what the response answered, then its output. */
export function continuedConversation(stored: KeptResponse): InputItem[] {
  return [...stored.conversation, ...outputAsInput(stored.response.output)];
}
