// `luminet orgs ...`: the orgs in DATABASE_URL and what each may use: its monthly quota (set with `luminet
// quota set`) and the priority tier, which `set-priority` grants or withdraws (gateways apply it within
// 30 s).
import type { Command } from "commander";
import { listOrgs, type OrgSettings, setPriorityTier } from "../../gateway/orgs.ts";
import { table } from "../table.ts";
import { withDb } from "../with-db.ts";

function rows(list: OrgSettings[]): string {
  return `${table(
    ["ORG", "NAME", "PRIORITY TIER", "MONTHLY QUOTA"],
    list.map((org) => [
      org.id,
      org.name,
      org.priority_tier ? "yes" : "no",
      org.monthly_token_quota === null ? "none" : String(org.monthly_token_quota),
    ]),
    3,
  )}\n`;
}

export function registerOrgs(program: Command): void {
  const orgs = program
    .command("orgs")
    .description("the orgs and what each may use: the priority tier, the monthly quota (DATABASE_URL)");
  orgs
    .command("list")
    .description("every org, with its priority tier and monthly quota")
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
}
