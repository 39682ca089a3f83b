// `luminet usage`: usage and cost rollups from DATABASE_URL by UTC day, adapter or API key, as a table or
// as JSON (--json: the same report `GET /v1/usage` returns). Costs are the meter's integer micro-dollars,
// shown as exact dollars.
import type { Command } from "commander";
import { inArray } from "drizzle-orm";
import { logger } from "../../core/logger.ts";
import { type Db, defaultDatabaseUrl, openDb } from "../../db/open.ts";
import { microsToDollars } from "../../meter/prices.ts";
import { sumRollup, toUsageReport } from "../../meter/usage-report.ts";
import {
  type UsageGrouping,
  type UsageQuery,
  type UsageRollupRow,
  usageGroupings,
  usageRollup,
} from "../../meter/usage-rollup.ts";
import { apiKeys } from "../../schema/db.ts";

interface UsageFlags {
  org?: string;
  since?: string;
  until?: string;
  by: string;
  base?: string;
  json?: boolean;
}

class FlagError extends Error {}

const DAY_MS = 86_400_000;

/** The start (UTC) of a YYYY-MM-DD day, refusing dates that do not exist. */
function day(flag: string, value: string): Date {
  const match = /^(\d{4})-(\d{2})-(\d{2})$/.exec(value);
  const date = match
    ? new Date(Date.UTC(Number(match[1]), Number(match[2]) - 1, Number(match[3])))
    : undefined;
  if (!date || date.toISOString().slice(0, 10) !== value) {
    throw new FlagError(`${flag} must be a day as YYYY-MM-DD, got "${value}"`);
  }
  return date;
}

function grouping(value: string): UsageGrouping {
  const found = usageGroupings.find((g) => g === value);
  if (!found) throw new FlagError(`--by must be one of ${usageGroupings.join(", ")}, got "${value}"`);
  return found;
}

/** "lm_ab12… (ci)" for each key id that still has a row, so a person can tell keys apart. */
async function keyLabels(db: Db, rows: UsageRollupRow[]): Promise<Map<string, string>> {
  const ids = [...new Set(rows.map((row) => row.group).filter((id) => id !== null))];
  if (ids.length === 0) return new Map();
  const keys = await db
    .select({ id: apiKeys.id, prefix: apiKeys.prefix, name: apiKeys.name })
    .from(apiKeys)
    .where(inArray(apiKeys.id, ids));
  return new Map(keys.map((key) => [key.id, `${key.prefix}… (${key.name})`]));
}

/** Columns from `firstNumeric` on hold numbers and align right. */
function table(header: string[], body: string[][], firstNumeric: number): string {
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((row) => row[i]!.length)));
  const line = (cells: string[]) =>
    cells
      .map((cell, i) => (i >= firstNumeric ? cell.padStart(widths[i]!) : cell.padEnd(widths[i]!)))
      .join("  ")
      .trimEnd();
  return [line(header), ...body.map(line)].join("\n");
}

async function runUsage(flags: UsageFlags): Promise<void> {
  const by = grouping(flags.by);
  const since = flags.since === undefined ? undefined : day("--since", flags.since);
  // --until names the last day included.
  const until =
    flags.until === undefined ? undefined : new Date(day("--until", flags.until).getTime() + DAY_MS);
  if (since && until && since >= until) throw new FlagError("--since must not be after --until");
  const db = await openDb(process.env.DATABASE_URL || defaultDatabaseUrl);
  try {
    const query: UsageQuery = {
      by,
      ...(flags.org !== undefined ? { org: flags.org } : {}),
      ...(since ? { since } : {}),
      ...(until ? { until } : {}),
      ...(flags.base !== undefined ? { base: flags.base } : {}),
    };
    const rows = await usageRollup(db, query);
    if (flags.json) {
      process.stdout.write(`${JSON.stringify(toUsageReport(query, rows), null, 2)}\n`);
      return;
    }
    const labels = by === "key" ? await keyLabels(db, rows) : new Map<string, string>();
    const label = (group: string | null) =>
      group === null ? "(base model)" : by === "key" ? (labels.get(group) ?? group) : group;
    const counts = (c: Omit<UsageRollupRow, "org" | "group">) => [
      String(c.requests),
      String(c.inputTokens),
      String(c.outputTokens),
      `$${microsToDollars(c.costMicros)}`,
    ];
    const header = ["org", by, "requests", "input tokens", "output tokens", "cost"];
    const body = [
      ...rows.map((row) => [row.org, label(row.group), ...counts(row)]),
      ["total", "", ...counts(sumRollup(rows))],
    ];
    process.stdout.write(`${table(header, body, 2)}\n`);
  } finally {
    await db.close();
  }
}

export function registerUsage(program: Command): void {
  program
    .command("usage")
    .description("usage and cost by day, adapter and key (DATABASE_URL)")
    .option("--org <org>", "organization (default: every org)")
    .option("--since <date>", "first day (YYYY-MM-DD, UTC)")
    .option("--until <date>", "last day, included (YYYY-MM-DD, UTC)")
    .option("--by <dimension>", "day | adapter | key", "day")
    .option("--base <base>", "only this base model")
    .option("--json", "print JSON instead of a table")
    .action(async (flags: UsageFlags) => {
      try {
        await runUsage(flags);
      } catch (error) {
        if (error instanceof FlagError) {
          process.stderr.write(`luminet usage: ${error.message}\n`);
        } else {
          logger.error({ err: error }, error instanceof Error ? error.message : String(error));
        }
        process.exitCode = 1;
      }
    });
}
