// One stored response and one stored chat completion of an org, written straight to the database as the
// gateway stores them: what the storage tests count, recount and restore.
import type { Db } from "../../db/open.ts";
import { saveResponse } from "../../gateway/response-store.ts";
import { storedChatCompletions } from "../../schema/db.ts";
import type { ResponseObject } from "../../schema/responses-api.ts";

export async function storeSamples(
  db: Db,
  orgId: string,
  ids: { response: string; completion: string },
  text: string,
): Promise<void> {
  const response = { id: ids.response, object: "response", created_at: 1_700_000_000, status: "completed" };
  await saveResponse(db, orgId, {
    response: response as unknown as ResponseObject,
    items: [{ type: "message", role: "user", content: text }],
    previous: null,
  });
  await db.insert(storedChatCompletions).values({
    id: ids.completion,
    orgId,
    model: "tiny",
    completion: { id: ids.completion, object: "chat.completion", choices: [] },
    messages: [{ role: "user", content: text }],
  });
}
