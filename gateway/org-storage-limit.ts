// The most bytes an org's files, adapters, conversations or stored responses may hold together: the
// operator's own limit for the org where one is set (orgs.*_storage_limit, `luminet orgs
// set-storage-limit`), else the gateway's (--max-org-*-storage). Read in the transaction that checks it, so
// a change applies to the next write (stored responses: within 30 s, response-storage-quota.ts).
import { eq } from "drizzle-orm";
import type { Db } from "../db/open.ts";
import { orgs } from "../schema/db.ts";

/** "responses": its stored responses and stored chat completions together. */
export type StorageKind = "files" | "adapters" | "conversations" | "responses";

/** Where each kind's limit of its own is kept. */
export const STORAGE_LIMIT_COLUMNS = {
  files: orgs.fileStorageLimit,
  adapters: orgs.adapterStorageLimit,
  conversations: orgs.conversationStorageLimit,
  responses: orgs.responseStorageLimit,
} as const;

export async function orgStorageLimit(
  db: Pick<Db, "select">,
  org: string,
  kind: StorageKind,
  gatewayLimit: number,
): Promise<number> {
  const [row] = await db.select({ limit: STORAGE_LIMIT_COLUMNS[kind] }).from(orgs).where(eq(orgs.id, org));
  return row?.limit ?? gatewayLimit;
}
