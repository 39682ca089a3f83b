// `luminet orgs ...`: the orgs in DATABASE_URL and what each may use: its monthly quota (set with `luminet
// quota set`), the priority tier, which `set-priority` grants or withdraws (gateways apply it within
// 30 s), and its pin limit, the most adapters it may have pinned on each base (`set-pin-limit`); and what
// each holds in files, adapters and conversations, which the gateway's per-org storage limits cap.
import type { Command } from "commander";
import { listOrgs, type OrgSettings, setPinLimit, setPriorityTier } from "../../gateway/orgs.ts";
import { humanBytes } from "../human-bytes.ts";
import { CliError } from "../run-command.ts";
import { table } from "../table.ts";
import { withDb } from "../with-db.ts";

function rows(list: OrgSettings[]): string {
  return `${table(
    ["ORG", "NAME", "PRIORITY TIER", "MONTHLY QUOTA", "PIN LIMIT", "FILES", "ADAPTERS", "CONVERSATIONS"],
    list.map((org) => [
      org.id,
      org.name,
      org.priority_tier ? "yes" : "no",
      org.monthly_token_quota === null ? "none" : String(org.monthly_token_quota),
      org.pin_limit === null ? "none" : String(org.pin_limit),
      humanBytes(org.storage.files_bytes),
      humanBytes(org.storage.adapters_bytes),
      humanBytes(org.storage.conversations_bytes),
    ]),
    3,
  )}\n`;
}

export function registerOrgs(program: Command): void {
  const orgs = program
    .command("orgs")
    .description(
      "the orgs and what each may use: the priority tier, the monthly quota, the pins per base (DATABASE_URL)",
    );
  orgs
    .command("list")
    .description(
      "every org, with its priority tier, monthly quota and pin limit, and the bytes its files, adapters and conversations hold",
    )
    .option("--json", "as one JSON array")
    .action((flags: { json?: boolean }) =>
      withDb("orgs", async (db) => {
        const list = await listOrgs(db);
        process.stdout.write(flags.json ? `${JSON.stringify(list)}\n` : rows(list));
      }),
    );
  orgs
    .command("set-priority")
    .description(
      'let an org\'s requests for service_tier "priority" have the priority tier (the default), or with --off run them at the standard tier',
    )
    .requiredOption("--org <org>", "organization id")
    .option(
      "--off",
      "withdraw the priority tier: its priority requests run (and are billed) at the standard tier",
    )
    .option("--json", "the org afterwards, as one JSON object")
    .action((flags: { org: string; off?: boolean; json?: boolean }) =>
      withDb("orgs", async (db) => {
        const org = await setPriorityTier(db, flags.org, flags.off !== true);
        if (!org) throw new Error(`no org "${flags.org}" (create one with \`luminet keys create --org\`)`);
        process.stdout.write(flags.json ? `${JSON.stringify(org)}\n` : rows([org]));
      }),
    );
  orgs
    .command("set-pin-limit")
    .description(
      "the most adapters an org may have pinned on each base, so one org cannot take every pinned place of a base shared with others; pins it has beyond a lowered limit stay",
    )
    .requiredOption("--org <org>", "organization id")
    .requiredOption("--pins <n|none>", "a count, 0 or more, or none: only the base's own limit")
    .option("--json", "the org afterwards, as one JSON object")
    .action((flags: { org: string; pins: string; json?: boolean }) =>
      withDb("orgs", async (db) => {
        const org = await setPinLimit(db, flags.org, pinsOf(flags.pins));
        if (!org) throw new Error(`no org "${flags.org}" (create one with \`luminet keys create --org\`)`);
        process.stdout.write(flags.json ? `${JSON.stringify(org)}\n` : rows([org]));
      }),
    );
}

/** --pins: a whole number, 0 or more, or "none". */
function pinsOf(value: string): number | null {
  if (value === "none") return null;
  const n = Number(value);
  if (value.trim() === "" || !Number.isSafeInteger(n) || n < 0) {
    throw new CliError(`--pins must be a whole number, 0 or more, or none; got "${value}"`);
  }
  return n;
}
