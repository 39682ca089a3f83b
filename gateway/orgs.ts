// Orgs as an operator manages them (`luminet orgs`): what each may use. An org is made with its first key
// (api-keys.ts ensureOrg); its monthly quota is set through meter/token-quota.ts.
import { asc, eq } from "drizzle-orm";
import type { Db } from "../db/open.ts";
import { orgs } from "../schema/db.ts";

export interface OrgSettings {
  id: string;
  name: string;
  monthly_token_quota: number | null;
  /** Its requests for service_tier "priority" get the priority tier. */
  priority_tier: boolean;
  /** Most adapters it may have pinned on each base; null: only the base's own limit. */
  pin_limit: number | null;
  /** Unix seconds. */
  created_at: number;
}

const columns = {
  id: orgs.id,
  name: orgs.name,
  monthlyTokenQuota: orgs.monthlyTokenQuota,
  priorityTier: orgs.priorityTier,
  pinLimit: orgs.pinLimit,
  createdAt: orgs.createdAt,
};

function settingsOf(row: {
  id: string;
  name: string;
  monthlyTokenQuota: number | null;
  priorityTier: boolean;
  pinLimit: number | null;
  createdAt: Date;
}): OrgSettings {
  return {
    id: row.id,
    name: row.name,
    monthly_token_quota: row.monthlyTokenQuota,
    priority_tier: row.priorityTier,
    pin_limit: row.pinLimit,
    created_at: Math.floor(row.createdAt.getTime() / 1000),
  };
}

export async function listOrgs(db: Db): Promise<OrgSettings[]> {
  return (await db.select(columns).from(orgs).orderBy(asc(orgs.id))).map(settingsOf);
}

/**
 * Lets the org's priority requests have the priority tier, or runs them at the standard tier; gateways apply
 * it within 30 s (their cached caller limits). The org as it is now; null where there is no such org.
 */
export async function setPriorityTier(db: Db, orgId: string, allowed: boolean): Promise<OrgSettings | null> {
  const [row] = await db
    .update(orgs)
    .set({ priorityTier: allowed })
    .where(eq(orgs.id, orgId))
    .returning(columns);
  return row ? settingsOf(row) : null;
}

/**
 * Sets the most adapters the org may have pinned on each base (null: no limit of its own). Pins it already
 * has beyond a lowered limit stay; new ones are refused until it is under. The org as it is now; null where
 * there is no such org.
 */
export async function setPinLimit(db: Db, orgId: string, limit: number | null): Promise<OrgSettings | null> {
  const [row] = await db.update(orgs).set({ pinLimit: limit }).where(eq(orgs.id, orgId)).returning(columns);
  return row ? settingsOf(row) : null;
}
