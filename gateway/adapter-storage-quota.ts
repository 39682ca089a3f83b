// How many bytes of adapters one org may keep in the blob store: its live adapters' stored sizes together,
// at most its limit (its own, else the gateway's maxOrgAdapterBytes; org-storage-limit.ts). An upload is refused before a byte of it is read when the org's
// adapters already fill that room, and again, exactly, when its row is written: the org's creates are
// counted one at a time there (a transaction-scoped advisory lock), so two at once cannot both take the
// last room. Deleting an adapter frees its bytes at once.
import { and, eq, isNull, sql } from "drizzle-orm";
import type { Db } from "../db/open.ts";
import { adapters } from "../schema/db.ts";
import { ApiError } from "./errors.ts";
import { orgStorageLimit } from "./org-storage-limit.ts";

export const DEFAULT_MAX_ORG_ADAPTER_BYTES = 100 * 1024 ** 3;

/** The bytes the org's live adapters hold in the blob store. */
export async function adapterBytesHeld(db: Pick<Db, "select">, org: string): Promise<number> {
  const [row] = await db
    .select({ held: sql<number>`coalesce(sum(${adapters.bytes}), 0)`.mapWith(Number) })
    .from(adapters)
    .where(and(eq(adapters.orgId, org), isNull(adapters.deletedAt)));
  return row?.held ?? 0;
}

function storageExceeded(held: number, bytes: number | null, maxBytes: number): ApiError {
  const adding = bytes === null ? "no room is left for another" : `this one ${bytes}`;
  return new ApiError(
    400,
    "invalid_request_error",
    `You have exceeded your adapter storage quota: your organization's adapters hold ${held} bytes, ${adding}, ` +
      `and together they may hold ${maxBytes}. Delete adapters you no longer serve ` +
      "(luminet adapters delete, or DELETE /v1/adapters/{name}) first.",
    "adapter_storage_limit_exceeded",
    "file",
  );
}

/**
 * 400 adapter_storage_limit_exceeded when the org's adapters already hold all they may (`gatewayLimit`
 * unless the org has its own): checked before an upload is read.
 */
export async function refuseFullAdapterStorage(
  db: Pick<Db, "select">,
  org: string,
  gatewayLimit: number,
): Promise<void> {
  const held = await adapterBytesHeld(db, org);
  const limit = await orgStorageLimit(db, org, "adapters", gatewayLimit);
  if (held >= limit) throw storageExceeded(held, null, limit);
}

/**
 * Within the transaction that writes the adapter's row: waits for the org's other creates, then refuses
 * with 400 adapter_storage_limit_exceeded when the org's adapters and `bytes` more would pass their limit
 * (`gatewayLimit` unless the org has its own).
 */
export async function reserveAdapterStorage(
  tx: Pick<Db, "select" | "execute">,
  org: string,
  bytes: number,
  gatewayLimit: number,
): Promise<void> {
  await tx.execute(sql`select pg_advisory_xact_lock(hashtext(${`luminet-adapter-storage:${org}`}))`);
  const held = await adapterBytesHeld(tx, org);
  const limit = await orgStorageLimit(tx, org, "adapters", gatewayLimit);
  if (held + bytes > limit) throw storageExceeded(held, bytes, limit);
}
