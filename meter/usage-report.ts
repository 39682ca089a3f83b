// The usage report: the rollups of meter/usage-rollup.ts with their total, in the JSON shape that both
// `GET /v1/usage` and `luminet usage --json` return, so the API and the CLI cannot disagree. Costs are the
// meter's integer micro-dollars, with the exact dollar amount beside them as a string.
import type { Db } from "../db/open.ts";
import { microsToDollars } from "./prices.ts";
import { type UsageGrouping, type UsageQuery, type UsageRollupRow, usageRollup } from "./usage-rollup.ts";

export interface UsageTotals {
  requests: number;
  input_tokens: number;
  /** Of input_tokens, those a worker's prefix cache covered (billed at the base's cached input price). */
  cached_input_tokens: number;
  output_tokens: number;
  total_tokens: number;
  cost_micros: number;
  /** The cost in dollars with six exact decimals, e.g. "0.000350". */
  cost_usd: string;
}

/** The field that names a row's group in the report, per grouping. */
export const groupField = {
  day: "day",
  adapter: "adapter",
  key: "api_key_id",
  tier: "service_tier",
} as const satisfies Record<UsageGrouping, string>;

/**
 * One group's totals: `day` ("YYYY-MM-DD", UTC), `adapter` (null: the base model alone), `api_key_id` or
 * `service_tier` ("default", "batch" or "priority"), whichever the report is grouped by.
 */
export type UsageReportRow = UsageTotals & { org: string } & {
  [K in (typeof groupField)[UsageGrouping]]?: string | null;
};

export interface UsageReport {
  object: "usage.report";
  group_by: UsageGrouping;
  /** The org the report covers; null when it covers every org (an operator's CLI view). */
  org: string | null;
  /** Rows finished at or after this instant (ISO 8601), or null for no lower bound. */
  start: string | null;
  /** Rows finished before this instant (ISO 8601), or null for no upper bound. */
  end: string | null;
  base: string | null;
  data: UsageReportRow[];
  total: UsageTotals;
}

function totals(counts: Omit<UsageRollupRow, "org" | "group">): UsageTotals {
  return {
    requests: counts.requests,
    input_tokens: counts.inputTokens,
    cached_input_tokens: counts.cachedInputTokens,
    output_tokens: counts.outputTokens,
    total_tokens: counts.inputTokens + counts.outputTokens,
    cost_micros: counts.costMicros,
    cost_usd: microsToDollars(counts.costMicros),
  };
}

/** Sums the rollup's rows: the report's total is exactly the sum of its rows. */
export function sumRollup(rows: readonly UsageRollupRow[]): Omit<UsageRollupRow, "org" | "group"> {
  return rows.reduce(
    (sum, row) => ({
      requests: sum.requests + row.requests,
      inputTokens: sum.inputTokens + row.inputTokens,
      cachedInputTokens: sum.cachedInputTokens + row.cachedInputTokens,
      outputTokens: sum.outputTokens + row.outputTokens,
      costMicros: sum.costMicros + row.costMicros,
    }),
    { requests: 0, inputTokens: 0, cachedInputTokens: 0, outputTokens: 0, costMicros: 0 },
  );
}

export function toUsageReport(query: UsageQuery, rows: readonly UsageRollupRow[]): UsageReport {
  return {
    object: "usage.report",
    group_by: query.by,
    org: query.org ?? null,
    start: query.since?.toISOString() ?? null,
    end: query.until?.toISOString() ?? null,
    base: query.base ?? null,
    data: rows.map((row) => ({ org: row.org, [groupField[query.by]]: row.group, ...totals(row) })),
    total: totals(sumRollup(rows)),
  };
}

export async function usageReport(db: Db, query: UsageQuery): Promise<UsageReport> {
  return toUsageReport(query, await usageRollup(db, query));
}
