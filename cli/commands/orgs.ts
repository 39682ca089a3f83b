// `luminet orgs ...`: the orgs in DATABASE_URL and what each may use: its monthly quota (set with `luminet
// quota set`), the priority tier, which `set-priority` grants or withdraws (gateways apply it within
// 30 s), its pin limit, the most adapters it may have pinned on each base (`set-pin-limit`), and its storage
// limits (`set-storage-limit`); and what each holds in files, adapters, conversations and stored responses.
import { SingleBar } from "cli-progress";
import type { Command } from "commander";
import { humanBytes } from "../../core/human-bytes.ts";
import { recountConversationStorage } from "../../gateway/conversation-recount.ts";
import type { StorageKind } from "../../gateway/org-storage-limit.ts";
import {
  getOrg,
  listOrgs,
  type OrgSettings,
  type StorageUse,
  setPinLimit,
  setPriorityTier,
  setStorageLimits,
} from "../../gateway/orgs.ts";
import { recountResponseStorage } from "../../gateway/response-recount.ts";
import { bytes } from "../flags.ts";
import { CliError } from "../run-command.ts";
import { table } from "../table.ts";
import { withDb } from "../with-db.ts";

/** "1.2 GiB", or "1.2 GiB of 500.0 GiB" where the org has a limit of its own. */
function storageCell(use: StorageUse): string {
  return use.limit === null ? humanBytes(use.bytes) : `${humanBytes(use.bytes)} of ${humanBytes(use.limit)}`;
}

function rows(list: OrgSettings[]): string {
  return `${table(
    [
      "ORG",
      "NAME",
      "PRIORITY TIER",
      "MONTHLY QUOTA",
      "PIN LIMIT",
      "FILES",
      "ADAPTERS",
      "CONVERSATIONS",
      "RESPONSES",
    ],
    list.map((org) => [
      org.id,
      org.name,
      org.priority_tier ? "yes" : "no",
      org.monthly_token_quota === null ? "none" : String(org.monthly_token_quota),
      org.pin_limit === null ? "none" : String(org.pin_limit),
      storageCell(org.storage.files),
      storageCell(org.storage.adapters),
      storageCell(org.storage.conversations),
      storageCell(org.storage.responses),
    ]),
    3,
  )}\n`;
}

/** The org a command changed or read; an org that does not exist is the command's error. */
function existing(org: OrgSettings | null, id: string): OrgSettings {
  if (!org) throw new Error(`no org "${id}" (create one with \`luminet keys create --org\`)`);
  return org;
}

/** One org or a list, as the table or (`--json`) as the JSON of what was given. */
function print(json: boolean | undefined, shown: OrgSettings | OrgSettings[]): void {
  process.stdout.write(json ? `${JSON.stringify(shown)}\n` : rows(Array.isArray(shown) ? shown : [shown]));
}

export function registerOrgs(program: Command): void {
  const orgs = program
    .command("orgs")
    .description(
      "the orgs and what each may use: the priority tier, the monthly quota, the pins per base, the storage (DATABASE_URL)",
    );
  orgs
    .command("list")
    .description(
      "every org, with its priority tier, monthly quota and pin limit, and the bytes its files, adapters, conversations and stored responses hold",
    )
    .option("--json", "as one JSON array")
    .action((flags: { json?: boolean }) =>
      withDb("orgs list", async (db) => {
        const list = await listOrgs(db);
        print(flags.json, list);
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
      withDb("orgs set-priority", async (db) => {
        const org = await setPriorityTier(db, flags.org, flags.off !== true);
        print(flags.json, existing(org, flags.org));
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
      withDb("orgs set-pin-limit", async (db) => {
        const org = await setPinLimit(db, flags.org, pinsOf(flags.pins));
        print(flags.json, existing(org, flags.org));
      }),
    );
  orgs
    .command("recount-storage")
    .description(
      "count what an org's conversations, stored responses and chat completions hold again from their rows (after a rolling upgrade across migration 0024, a restore that bypassed triggers, or to check the counts); writes to them wait while it runs",
    )
    .option("--org <org>", "one organization; default every org")
    .option("--json", "the orgs afterwards, as one JSON array")
    .action((flags: { org?: string; json?: boolean }) =>
      withDb("orgs recount-storage", async (db) => {
        const ids = flags.org ? [flags.org] : (await listOrgs(db)).map((org) => org.id);
        // Every org's count can take a while: a bar of the orgs counted on stderr, when it is a terminal.
        const bar =
          ids.length > 1 && process.stderr.isTTY
            ? new SingleBar({
                format: "orgs [{bar}] {value}/{total} {org}",
                stream: process.stderr,
                hideCursor: true,
              })
            : null;
        bar?.start(ids.length, 0, { org: "" });
        const counted: OrgSettings[] = [];
        for (const id of ids) {
          bar?.update({ org: id });
          // An org that does not exist has nothing stored: the recount changes nothing for it.
          await recountConversationStorage(db, id);
          await recountResponseStorage(db, id);
          counted.push(existing(await getOrg(db, id), id));
          bar?.increment();
        }
        bar?.stop();
        print(flags.json, counted);
      }),
    );
  orgs
    .command("set-storage-limit")
    .description(
      "the most bytes an org's files, adapters, conversations or stored responses may hold together, in place of the gateway's --max-org-*-storage for that org; what it holds beyond a lowered limit stays, and new writes of that kind get 400 until it is under",
    )
    .requiredOption("--org <org>", "organization id")
    .option("--files <n|default>", "its files not yet expired (512GiB, 1TB …), or default: the gateway's")
    .option("--adapters <n|default>", "its live adapters' blobs, or default")
    .option("--conversations <n|default>", "its conversations' items and metadata, or default")
    .option("--responses <n|default>", "its stored responses and chat completions, or default")
    .option("--json", "the org afterwards, as one JSON object")
    .action((flags: StorageFlags & { org: string; json?: boolean }) =>
      withDb("orgs set-storage-limit", async (db) => {
        const org = await setStorageLimits(db, flags.org, storageLimitsOf(flags));
        print(flags.json, existing(org, flags.org));
      }),
    );
}

type StorageFlags = Partial<Record<StorageKind, string>>;

/** The limits the flags give: a byte count, or null for "default" (the gateway's own). */
function storageLimitsOf(flags: StorageFlags): Partial<Record<StorageKind, number | null>> {
  const kinds = (["files", "adapters", "conversations", "responses"] as const).filter(
    (kind) => flags[kind] !== undefined,
  );
  if (kinds.length === 0) {
    throw new CliError("give at least one of --files, --adapters, --conversations and --responses");
  }
  return Object.fromEntries(
    kinds.map((kind) => {
      const value = flags[kind]!;
      return [kind, value === "default" ? null : bytes(`--${kind}`, value)];
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
