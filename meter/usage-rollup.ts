// Usage rollups: billing rows summed by UTC day, adapter, API key or service tier, for one org or all of them. The one
// query `luminet usage`, the usage API and the dashboard read, so their numbers agree by construction.
import { and, eq, gte, lt, type SQL, sql } from "drizzle-orm";
import type { Db } from "../db/open.ts";
import { usageDay, usageEvents } from "../schema/db.ts";

export const usageGroupings = ["day", "adapter", "key", "tier"] as const;
export type UsageGrouping = (typeof usageGroupings)[number];

export interface UsageQuery {
  by: UsageGrouping;
  /** One org's usage; every org's when unset (an operator's view). */
  org?: string;
  /** Rows that finished at or after this instant. */
  since?: Date;
  /** Rows that finished before this instant. */
  until?: Date;
  /** One base model's usage. */
  base?: string;
}

export interface UsageRollupRow {
  org: string;
  /**
   * The UTC day ("YYYY-MM-DD"), the adapter name (null: the base model alone), the API key id, or the tier
   * the rows were billed at: "default", "batch" (Batch API lines and flex requests) or "priority".
   */
  group: string | null;
  requests: number;
  inputTokens: number;
  /** Of inputTokens, those a worker's prefix cache covered. */
  cachedInputTokens: number;
  outputTokens: number;
  costMicros: number;
}

function groupExpression(by: UsageGrouping): SQL {
  switch (by) {
    case "day":
      return usageDay();
    case "adapter":
      return sql`${usageEvents.adapter}`;
    case "key":
      return sql`${usageEvents.apiKeyId}`;
    case "tier":
      return sql`case when ${usageEvents.batch} then 'batch' when ${usageEvents.priority} then 'priority' else 'default' end`;
  }
}

/** Sums per org and group, ordered by org then group (days oldest first). */
export async function usageRollup(db: Db, query: UsageQuery): Promise<UsageRollupRow[]> {
  const group = groupExpression(query.by);
  const filters = [
    // An attempt the batch runner ran again is not billed (meter/waived-usage.ts).
    eq(usageEvents.waived, false),
    query.org === undefined ? undefined : eq(usageEvents.orgId, query.org),
    query.since === undefined ? undefined : gte(usageEvents.finishedAt, query.since),
    query.until === undefined ? undefined : lt(usageEvents.finishedAt, query.until),
    query.base === undefined ? undefined : eq(usageEvents.base, query.base),
  ];
  // Sums of integer columns come back as bigint/numeric strings; token and micro-dollar totals stay far
  // below 2^53, where a number is exact.
  return db
    .select({
      org: usageEvents.orgId,
      group: sql<string | null>`(${group})::text`,
      requests: sql`count(*)`.mapWith(Number),
      inputTokens: sql`sum(${usageEvents.inputTokens})`.mapWith(Number),
      cachedInputTokens: sql`sum(${usageEvents.cachedInputTokens})`.mapWith(Number),
      outputTokens: sql`sum(${usageEvents.outputTokens})`.mapWith(Number),
      costMicros: sql`sum(${usageEvents.costMicros})`.mapWith(Number),
    })
    .from(usageEvents)
    .where(and(...filters))
    .groupBy(usageEvents.orgId, group)
    .orderBy(usageEvents.orgId, group);
}
