// `luminet usage`: usage and cost by UTC day, adapter or API key, as a table or as JSON (--json: the report
// `GET /v1/usage` returns). Through the gateway's GET /v1/usage when a gateway or an API key is named (the
// key's own org), else from DATABASE_URL (any org, or every org). Costs are the meter's integer
// micro-dollars, shown as exact dollars.
import type { Command } from "commander";
import { eq, inArray } from "drizzle-orm";
import type { Db } from "../../db/open.ts";
import { keyLabel } from "../../gateway/api-keys.ts";
import { getOrg } from "../../gateway/orgs.ts";
import { groupField, type UsageReport, type UsageTotals, usageReport } from "../../meter/usage-report.ts";
import { type UsageGrouping, type UsageQuery, usageGroupings } from "../../meter/usage-rollup.ts";
import { apiKeys, baseModels } from "../../schema/db.ts";
import { KeyList } from "../../schema/key-api.ts";
import {
  callGateway,
  GATEWAY_OR_DATABASE,
  GatewayError,
  type GatewayFlags,
  gatewayNamed,
  gatewayOptions,
} from "../gateway-client.ts";
import { CliError, runCommand } from "../run-command.ts";
import { table } from "../table.ts";
import { usingDb } from "../with-db.ts";

interface UsageFlags extends GatewayFlags {
  org?: string;
  since?: string;
  until?: string;
  by: string;
  base?: string;
  json?: boolean;
}

const DAY_MS = 86_400_000;

/** The start (UTC) of a YYYY-MM-DD day, refusing dates that do not exist. */
function day(flag: string, value: string): Date {
  const match = /^(\d{4})-(\d{2})-(\d{2})$/.exec(value);
  const date = match
    ? new Date(Date.UTC(Number(match[1]), Number(match[2]) - 1, Number(match[3])))
    : undefined;
  if (!date || date.toISOString().slice(0, 10) !== value) {
    throw new CliError(`${flag} must be a day as YYYY-MM-DD, got "${value}"`);
  }
  return date;
}

function grouping(value: string): UsageGrouping {
  const found = usageGroupings.find((g) => g === value);
  if (!found) throw new CliError(`--by must be one of ${usageGroupings.join(", ")}, got "${value}"`);
  return found;
}

function queryOf(flags: UsageFlags): UsageQuery {
  const since = flags.since === undefined ? undefined : day("--since", flags.since);
  // --until names the last day included.
  const until =
    flags.until === undefined ? undefined : new Date(day("--until", flags.until).getTime() + DAY_MS);
  if (since && until && since >= until) throw new CliError("--since must not be after --until");
  return {
    by: grouping(flags.by),
    ...(flags.org !== undefined ? { org: flags.org } : {}),
    ...(since ? { since } : {}),
    ...(until ? { until } : {}),
    ...(flags.base !== undefined ? { base: flags.base } : {}),
  };
}

/** The report and, for --by key, "lk_ab12… (ci)" for each key id still known, so people can tell keys apart. */
interface LabelledReport {
  report: UsageReport;
  keyLabels: Map<string, string>;
}

const keyIds = (report: UsageReport) =>
  report.data.map((row) => row.api_key_id).filter((id): id is string => typeof id === "string");

async function fromDatabase(db: Db, query: UsageQuery): Promise<LabelledReport> {
  const report = await usageReport(db, query);
  // An empty report for a name that is not there is most likely a typo: say so rather than print zeros.
  if (report.data.length === 0) {
    if (query.org !== undefined && !(await getOrg(db, query.org)))
      throw new CliError(`no org "${query.org}"`);
    if (query.base !== undefined) {
      const [base] = await db
        .select({ name: baseModels.name })
        .from(baseModels)
        .where(eq(baseModels.name, query.base));
      if (!base) throw new CliError(`no base model "${query.base}" (luminet bases list names them)`);
    }
  }
  const ids = [...new Set(keyIds(report))];
  const keys =
    ids.length === 0
      ? []
      : await db
          .select({ id: apiKeys.id, prefix: apiKeys.prefix, name: apiKeys.name })
          .from(apiKeys)
          .where(inArray(apiKeys.id, ids));
  return { report, keyLabels: new Map(keys.map((key) => [key.id, keyLabel(key)])) };
}

/** GET /v1/usage with the same query; key labels from GET /v1/keys when the key may list keys (admin). */
async function fromGateway(flags: UsageFlags, query: UsageQuery): Promise<LabelledReport> {
  const params = new URLSearchParams({ group_by: query.by });
  if (query.org !== undefined) params.set("org", query.org);
  if (query.since) params.set("start", query.since.toISOString());
  if (query.until) params.set("end", query.until.toISOString());
  if (query.base !== undefined) params.set("base", query.base);
  const report = (await callGateway(flags, "GET", `/v1/usage?${params}`)) as UsageReport;
  if (keyIds(report).length === 0) return { report, keyLabels: new Map() };
  try {
    const keys = KeyList.parse(await callGateway(flags, "GET", "/v1/keys")).data;
    return { report, keyLabels: new Map(keys.map((key) => [key.id, keyLabel(key)])) };
  } catch (error) {
    // A key without the admin scope reads its org's usage but not its keys: the table shows key ids.
    if (error instanceof GatewayError && error.status === 403) return { report, keyLabels: new Map() };
    throw error;
  }
}

function usageTable({ report, keyLabels }: LabelledReport): string {
  const by = report.group_by;
  const label = (group: string | null | undefined) =>
    group == null ? "(base model)" : by === "key" ? (keyLabels.get(group) ?? group) : group;
  const counts = (t: UsageTotals) => [
    String(t.requests),
    String(t.input_tokens),
    // A gateway older than the cached count leaves it out.
    String(t.cached_input_tokens ?? 0),
    String(t.output_tokens),
    `$${t.cost_usd}`,
  ];
  const header = ["org", by, "requests", "input tokens", "cached input", "output tokens", "cost"];
  const body = [
    ...report.data.map((row) => [row.org, label(row[groupField[by]]), ...counts(row)]),
    ["total", "", ...counts(report.total)],
  ];
  return table(header, body, 2);
}

export function registerUsage(program: Command): void {
  gatewayOptions(
    program
      .command("usage")
      .description(
        "usage and cost by day, adapter, key or service tier, through the gateway or on DATABASE_URL",
      ),
    "an API key of the org; key labels need the admin scope",
  )
    .option(
      "--org <org>",
      "organization (on DATABASE_URL default every org; through a gateway, the key's own)",
    )
    .option("--since <date>", "first day (YYYY-MM-DD, UTC)")
    .option("--until <date>", "last day, included (YYYY-MM-DD, UTC)")
    .option("--by <dimension>", "day | adapter | key | tier", "day")
    .option("--base <base>", "only this base model")
    .option("--json", "print JSON instead of a table")
    .addHelpText("after", GATEWAY_OR_DATABASE)
    .action((flags: UsageFlags) =>
      runCommand("usage", async () => {
        const query = queryOf(flags);
        const labelled = gatewayNamed(flags)
          ? await fromGateway(flags, query)
          : await usingDb((db) => fromDatabase(db, query));
        process.stdout.write(
          flags.json ? `${JSON.stringify(labelled.report, null, 2)}\n` : `${usageTable(labelled)}\n`,
        );
      }),
    );
}
