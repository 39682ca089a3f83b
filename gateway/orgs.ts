// Orgs as an operator manages them (`luminet orgs`): what each may use, and what each holds in storage
// against its storage limits (org-storage-limit.ts). An org is made with its first key (api-keys.ts
// ensureOrg); its monthly quota is set through meter/token-quota.ts.
import { and, asc, eq, isNull, sql } from "drizzle-orm";
import type { Db } from "../db/open.ts";
import { adapters, conversationStorage, files, orgs, responseStorage } from "../schema/db.ts";
import { live } from "./files.ts";
import type { StorageKind } from "./org-storage-limit.ts";

export interface OrgSettings {
  id: string;
  name: string;
  monthly_token_quota: number | null;
  /** Its requests for service_tier "priority" get the priority tier. */
  priority_tier: boolean;
  /** Most adapters it may have pinned on each base; null: only the base's own limit. */
  pin_limit: number | null;
  /**
   * What it holds (bytes): its files not yet expired, its live adapters' blobs, its conversations, its
   * stored responses and chat completions; each with the org's own limit, null where the gateway's
   * --max-org-*-storage applies.
   */
  storage: Record<StorageKind, StorageUse>;
  /** Unix seconds. */
  created_at: number;
}

export interface StorageUse {
  bytes: number;
  limit: number | null;
}

/** What each org's files not yet expired hold, by org (`orgId`'s only, when given). */
function fileTotals(db: Db, orgId: string | undefined) {
  return db
    .select({ orgId: files.orgId, bytes: sql<string>`sum(${files.bytes})`.as("file_bytes") })
    .from(files)
    .where(and(live(new Date()), orgId === undefined ? undefined : eq(files.orgId, orgId)))
    .groupBy(files.orgId)
    .as("file_totals");
}

/** What each org's live adapters hold in the blob store, by org (`orgId`'s only, when given). */
function adapterTotals(db: Db, orgId: string | undefined) {
  return db
    .select({ orgId: adapters.orgId, bytes: sql<string>`sum(${adapters.bytes})`.as("adapter_bytes") })
    .from(adapters)
    .where(and(isNull(adapters.deletedAt), orgId === undefined ? undefined : eq(adapters.orgId, orgId)))
    .groupBy(adapters.orgId)
    .as("adapter_totals");
}

/**
 * What each org's conversations, or its stored responses and chat completions, hold, by org: the sum of its
 * counter rows (`orgId`'s only, when given).
 */
function shardTotals(
  db: Db,
  shards: typeof conversationStorage | typeof responseStorage,
  name: string,
  orgId: string | undefined,
) {
  return db
    .select({ orgId: shards.orgId, bytes: sql<string>`sum(${shards.bytes})`.as(`${name}_bytes`) })
    .from(shards)
    .where(orgId === undefined ? undefined : eq(shards.orgId, orgId))
    .groupBy(shards.orgId)
    .as(`${name}_totals`);
}

/**
 * Every org (or `orgId` alone), by id, with what each holds. For one org the totals read that org's rows
 * only: GET /v1/storage and each dashboard page load ask this.
 */
async function orgSettings(db: Db, orgId?: string): Promise<OrgSettings[]> {
  const fileBytes = fileTotals(db, orgId);
  const adapterBytes = adapterTotals(db, orgId);
  const conversationBytes = shardTotals(db, conversationStorage, "conversation", orgId);
  const responseBytes = shardTotals(db, responseStorage, "response", orgId);
  const rows = await db
    .select({
      org: orgs,
      fileBytes: sql<number>`coalesce(${fileBytes.bytes}, 0)`.mapWith(Number),
      adapterBytes: sql<number>`coalesce(${adapterBytes.bytes}, 0)`.mapWith(Number),
      conversationBytes: sql<number>`coalesce(${conversationBytes.bytes}, 0)`.mapWith(Number),
      responseBytes: sql<number>`coalesce(${responseBytes.bytes}, 0)`.mapWith(Number),
    })
    .from(orgs)
    .leftJoin(fileBytes, eq(fileBytes.orgId, orgs.id))
    .leftJoin(adapterBytes, eq(adapterBytes.orgId, orgs.id))
    .leftJoin(conversationBytes, eq(conversationBytes.orgId, orgs.id))
    .leftJoin(responseBytes, eq(responseBytes.orgId, orgs.id))
    .where(orgId === undefined ? undefined : eq(orgs.id, orgId))
    .orderBy(asc(orgs.id));
  return rows.map(({ org, fileBytes, adapterBytes, conversationBytes, responseBytes }) => ({
    id: org.id,
    name: org.name,
    monthly_token_quota: org.monthlyTokenQuota,
    priority_tier: org.priorityTier,
    pin_limit: org.pinLimit,
    storage: {
      files: { bytes: fileBytes, limit: org.fileStorageLimit },
      adapters: { bytes: adapterBytes, limit: org.adapterStorageLimit },
      conversations: { bytes: conversationBytes, limit: org.conversationStorageLimit },
      responses: { bytes: responseBytes, limit: org.responseStorageLimit },
    },
    created_at: Math.floor(org.createdAt.getTime() / 1000),
  }));
}

export function listOrgs(db: Db): Promise<OrgSettings[]> {
  return orgSettings(db);
}

/** The org as it is now; null where there is no such org. */
export async function getOrg(db: Db, orgId: string): Promise<OrgSettings | null> {
  return (await orgSettings(db, orgId))[0] ?? null;
}

/**
 * Lets the org's priority requests have the priority tier, or runs them at the standard tier; gateways apply
 * it within 30 s (their cached caller limits). The org as it is now; null where there is no such org.
 */
export async function setPriorityTier(db: Db, orgId: string, allowed: boolean): Promise<OrgSettings | null> {
  await db.update(orgs).set({ priorityTier: allowed }).where(eq(orgs.id, orgId));
  return getOrg(db, orgId);
}

/**
 * Sets the most adapters the org may have pinned on each base (null: no limit of its own). Pins it already
 * has beyond a lowered limit stay; new ones are refused until it is under. The org as it is now; null where
 * there is no such org.
 */
export async function setPinLimit(db: Db, orgId: string, limit: number | null): Promise<OrgSettings | null> {
  await db.update(orgs).set({ pinLimit: limit }).where(eq(orgs.id, orgId));
  return getOrg(db, orgId);
}

/**
 * Sets the org's own storage limits for the kinds given (null: back to the gateway's). What it holds
 * beyond a lowered limit stays; new writes of that kind are refused until it is under. The org as it is
 * now; null where there is no such org.
 */
export async function setStorageLimits(
  db: Db,
  orgId: string,
  limits: Partial<Record<StorageKind, number | null>>,
): Promise<OrgSettings | null> {
  await db
    .update(orgs)
    .set({
      ...(limits.files !== undefined ? { fileStorageLimit: limits.files } : {}),
      ...(limits.adapters !== undefined ? { adapterStorageLimit: limits.adapters } : {}),
      ...(limits.conversations !== undefined ? { conversationStorageLimit: limits.conversations } : {}),
      ...(limits.responses !== undefined ? { responseStorageLimit: limits.responses } : {}),
    })
    .where(eq(orgs.id, orgId));
  return getOrg(db, orgId);
}
