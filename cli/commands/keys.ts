// `luminet keys ...`: API keys of an org, in DATABASE_URL. A created key is printed once, alone on stdout
// (so `KEY=$(luminet keys create --org acme)` works); it cannot be shown again.
import { type Command, InvalidArgumentError } from "commander";
import {
  createApiKey,
  ensureOrg,
  listApiKeys,
  revokeApiKey,
  setApiKeyLimits,
} from "../../gateway/api-keys.ts";
import { withDb } from "../with-db.ts";

const collect = (value: string, previous: string[]) => [...previous, value];

// Commander turns a parser's null into "", so "none" stays a word until the action reads it.
type LimitFlag = number | "none";

/** A per-minute limit as typed: a whole number, or "none" to remove it. */
function perMinute(value: string): LimitFlag {
  if (value === "none") return value;
  if (!/^\d+$/.test(value))
    throw new InvalidArgumentError(`expected a whole number or "none", got "${value}"`);
  return Number(value);
}

const limitOf = (flag: LimitFlag | undefined): number | null | undefined => (flag === "none" ? null : flag);

const limitsText = (rpm: number | null, tpm: number | null) =>
  rpm === null && tpm === null ? "" : `  limits ${rpm ?? "-"} rpm / ${tpm ?? "-"} tpm`;

export function registerKeys(program: Command): void {
  const keys = program.command("keys").description("manage API keys (DATABASE_URL)");
  keys
    .command("create")
    .description("create an API key (shown once); creates the org if it does not exist")
    .requiredOption("--org <org>", "organization id (the `org` in model ids)")
    .option("--name <name>", "what the key is for", "default")
    .option("--scope <scope>", 'a scope, e.g. "admin" for management routes (repeatable)', collect, [])
    .option("--rpm <n>", "most requests per minute through this key (default: no limit)", perMinute)
    .option("--tpm <n>", "most tokens (prompt + max_tokens) per minute through this key", perMinute)
    .action((flags: { org: string; name: string; scope: string[]; rpm?: LimitFlag; tpm?: LimitFlag }) =>
      withDb("keys", async (db) => {
        await ensureOrg(db, flags.org);
        const { key, record } = await createApiKey(db, {
          orgId: flags.org,
          name: flags.name,
          scopes: flags.scope,
          requestsPerMinute: limitOf(flags.rpm) ?? null,
          tokensPerMinute: limitOf(flags.tpm) ?? null,
        });
        // The key alone goes to stdout, so `KEY=$(luminet keys create …)` captures exactly it.
        process.stderr.write(
          `created key ${record.prefix}… for org ${record.orgId} (scopes: ${record.scopes.join(", ") || "none"}; ` +
            `rpm: ${record.requestsPerMinute ?? "none"}; tpm: ${record.tokensPerMinute ?? "none"}); it is shown only once\n`,
        );
        process.stdout.write(`${key}\n`);
      }),
    );
  keys
    .command("list")
    .description("list an org's API keys by prefix")
    .requiredOption("--org <org>", "organization id")
    .option("--json", "one JSON object per line")
    .action((flags: { org: string; json?: boolean }) =>
      withDb("keys", async (db) => {
        for (const k of await listApiKeys(db, flags.org)) {
          const row = {
            prefix: k.prefix,
            name: k.name,
            scopes: k.scopes,
            rpm: k.requestsPerMinute,
            tpm: k.tokensPerMinute,
            created: k.createdAt.toISOString(),
            last_used: k.lastUsedAt?.toISOString() ?? null,
            revoked: k.revokedAt?.toISOString() ?? null,
          };
          process.stdout.write(
            flags.json
              ? `${JSON.stringify(row)}\n`
              : `${row.prefix}…  ${row.name}  [${row.scopes.join(",")}]  created ${row.created}` +
                  `${limitsText(row.rpm, row.tpm)}${row.revoked ? `  REVOKED ${row.revoked}` : ""}\n`,
          );
        }
      }),
    );
  keys
    .command("revoke <prefix>")
    .description("revoke an API key by its prefix; it stops working within 30 s")
    .requiredOption("--org <org>", "organization id")
    .action((prefix: string, flags: { org: string }) =>
      withDb("keys", async (db) => {
        const revoked = await revokeApiKey(db, flags.org, prefix);
        process.stdout.write(`revoked ${revoked.prefix}…\n`);
      }),
    );
  keys
    .command("limits <prefix>")
    .description('set a key\'s per-minute limits ("none" removes one); gateways apply them within 30 s')
    .requiredOption("--org <org>", "organization id")
    .option("--rpm <n>", 'most requests per minute, or "none"', perMinute)
    .option("--tpm <n>", 'most tokens (prompt + max_tokens) per minute, or "none"', perMinute)
    .action((prefix: string, flags: { org: string; rpm?: LimitFlag; tpm?: LimitFlag }) =>
      withDb("keys", async (db) => {
        if (flags.rpm === undefined && flags.tpm === undefined) throw new Error("give --rpm and/or --tpm");
        const updated = await setApiKeyLimits(db, flags.org, prefix, {
          ...(flags.rpm !== undefined ? { requestsPerMinute: limitOf(flags.rpm) } : {}),
          ...(flags.tpm !== undefined ? { tokensPerMinute: limitOf(flags.tpm) } : {}),
        });
        process.stdout.write(
          `${updated.prefix}…  ${updated.requestsPerMinute ?? "no"} rpm limit, ` +
            `${updated.tokensPerMinute ?? "no"} tpm limit\n`,
        );
      }),
    );
}
