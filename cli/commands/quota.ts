// `luminet quota ...`: an org's monthly token quota in DATABASE_URL, and where its current UTC month
// stands (used by billed requests, held by requests in flight). Gateways apply a changed quota within 30 s.
import { type Command, InvalidArgumentError } from "commander";
import type { Db } from "../../db/open.ts";
import { type QuotaStatus, quotaStatus, setMonthlyTokenQuota } from "../../meter/token-quota.ts";
import { withDb } from "../with-db.ts";

// Commander turns a parser's null into "", so "none" stays a word until the action reads it.
function tokens(value: string): number | "none" {
  if (value === "none") return value;
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(Number(value))) {
    throw new InvalidArgumentError(`expected a whole number of tokens or "none", got "${value}"`);
  }
  return Number(value);
}

function describe(status: QuotaStatus): string {
  if (status.quota === null) {
    return `${status.org}: no monthly quota; ${status.month}: ${status.used} tokens used, ${status.reserved} held\n`;
  }
  return (
    `${status.org}: ${status.quota} tokens a month; ${status.month}: ${status.used} used, ` +
    `${status.reserved} held by requests in flight, ${status.remaining} left\n`
  );
}

async function statusOf(db: Db, org: string): Promise<QuotaStatus> {
  const status = await quotaStatus(db, org, Date.now());
  if (!status) throw new Error(`no org "${org}"`);
  return status;
}

export function registerQuota(program: Command): void {
  const quota = program.command("quota").description("an org's monthly token quota (DATABASE_URL)");
  quota
    .command("set")
    .description('set an org\'s monthly token quota (input + output tokens per UTC month), or "none"')
    .requiredOption("--org <org>", "organization id")
    .requiredOption("--monthly-tokens <n>", 'tokens per month, or "none" for no quota', tokens)
    .action((flags: { org: string; monthlyTokens: number | "none" }) =>
      withDb("quota set", async (db) => {
        const quota = flags.monthlyTokens === "none" ? null : flags.monthlyTokens;
        if (!(await setMonthlyTokenQuota(db, flags.org, quota))) {
          throw new Error(`no org "${flags.org}" (create one with \`luminet keys create --org\`)`);
        }
        process.stdout.write(describe(await statusOf(db, flags.org)));
      }),
    );
  quota
    .command("show")
    .description("an org's quota and its current month's used and held tokens")
    .requiredOption("--org <org>", "organization id")
    .option("--json", "as one JSON object")
    .action((flags: { org: string; json?: boolean }) =>
      withDb("quota show", async (db) => {
        const status = await statusOf(db, flags.org);
        process.stdout.write(flags.json ? `${JSON.stringify(status)}\n` : describe(status));
      }),
    );
}
