// Deleting a stored response, as DELETE /v1/responses/{id} and the dashboard's Delete do: its row (the
// responses that continue it keep their whole conversation, response-store.ts) and, where it was created
// in the background and has not run yet, its job, so it never runs and is never billed.
import type { Db } from "../db/open.ts";
import { cancelBackgroundJob } from "./batches.ts";
import { responseKey } from "./response-output.ts";
import { dropResponse } from "./response-store.ts";

/** False when the org has no response with this id. */
export async function deleteResponse(db: Db, orgId: string, id: string, now: Date): Promise<boolean> {
  if (!(await dropResponse(db, orgId, id))) return false;
  await cancelBackgroundJob(db, responseKey(id), now);
  return true;
}
