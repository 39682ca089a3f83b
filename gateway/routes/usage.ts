// GET /v1/usage: the caller's org's usage and cost from the billing rows, grouped by UTC day, adapter, API
// key or service tier — the report `luminet usage --json` prints (meter/usage-report.ts). Query parameters:
//   group_by  day (default) | adapter | key | tier (default, batch: Batch API lines and flex, priority)
//   start     rows finished at or after: unix seconds, a UTC day (YYYY-MM-DD) or an ISO 8601 instant
//   end       rows finished before (exclusive), in the same forms
//   base      one base model only
// The rows are what the meter committed; an event still in JetStream shows up once it is metered.
import type { Handler } from "hono";
import { usageReport } from "../../meter/usage-report.ts";
import { type UsageGrouping, type UsageQuery, usageGroupings } from "../../meter/usage-rollup.ts";
import type { GatewayEnv } from "../context.ts";
import type { GatewayDeps } from "../deps.ts";
import { invalidRequest } from "../errors.ts";

function instant(param: "start" | "end", value: string): Date {
  let date: Date | undefined;
  if (/^\d{1,12}$/.test(value)) date = new Date(Number(value) * 1000);
  else if (/^\d{4}-\d{2}-\d{2}$/.test(value)) {
    date = new Date(`${value}T00:00:00Z`);
    // Date accepts 2025-02-30 as 2 March; a day that does not exist is a mistake worth reporting.
    if (!Number.isNaN(date.getTime()) && date.toISOString().slice(0, 10) !== value) date = undefined;
  } else if (/^\d{4}-\d{2}-\d{2}T[\d:.]+(?:Z|[+-]\d{2}:\d{2})$/.test(value)) date = new Date(value);
  if (!date || Number.isNaN(date.getTime())) {
    throw invalidRequest(
      `Invalid '${param}': expected unix seconds, a day (YYYY-MM-DD) or an ISO 8601 instant with a time zone, got '${value}'.`,
      param,
    );
  }
  return date;
}

function grouping(value: string | undefined): UsageGrouping {
  if (value === undefined) return "day";
  const found = usageGroupings.find((g) => g === value);
  if (!found) {
    throw invalidRequest(
      `Invalid 'group_by': expected one of ${usageGroupings.join(", ")}, got '${value}'.`,
      "group_by",
    );
  }
  return found;
}

export function usageRoute(deps: GatewayDeps): Handler<GatewayEnv> {
  return async (c) => {
    const { start, end, base } = c.req.query();
    const query: UsageQuery = {
      by: grouping(c.req.query("group_by")),
      org: c.get("principal").orgId,
      ...(start !== undefined ? { since: instant("start", start) } : {}),
      ...(end !== undefined ? { until: instant("end", end) } : {}),
      ...(base ? { base } : {}),
    };
    if (query.since && query.until && query.since >= query.until) {
      throw invalidRequest("Invalid 'end': it must be later than 'start'.", "end");
    }
    return c.json(await usageReport(deps.db, query));
  };
}
