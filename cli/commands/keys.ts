// `luminet keys ...`: an org's API keys, through the gateway's admin API (/v1/keys) when a gateway or an API
// key is named, else straight in DATABASE_URL: the operator's way to an org's first admin key. Both ways
// validate alike and print alike: a created key alone on stdout (so `KEY=$(luminet keys create …)` works),
// shown once and never again; tables for people; the API's JSON with --json.
import { type Command, InvalidArgumentError } from "commander";
import type { z } from "zod";
import type { Db } from "../../db/open.ts";
import {
  apiKeyPrefix,
  createApiKey,
  ensureOrg,
  keyObject,
  listApiKeys,
  revokeApiKey,
  setApiKeyLimits,
} from "../../gateway/api-keys.ts";
import { invalidBody } from "../../gateway/errors.ts";
import { KeyCreate, KeyCreated, KeyLimitsPatch, KeyList, KeyObject } from "../../schema/key-api.ts";
import {
  apiKeyOf,
  callGateway,
  GATEWAY_OR_DATABASE,
  type GatewayFlags,
  gatewayNamed,
  gatewayOptions,
  jsonBody,
} from "../gateway-client.ts";
import { CliError, runCommand } from "../run-command.ts";
import { instantCell, table } from "../table.ts";
import { usingDb } from "../with-db.ts";

interface KeysFlags extends GatewayFlags {
  org?: string;
  json?: boolean;
}

/** A key to create as the flags give it: each store checks it as the API does (KeyCreate). */
type KeyCreateFlags = Omit<KeyCreate, "scopes"> & { scopes: string[] };

/** What `luminet keys` does, through the gateway or on the database; both answer in the API's shapes. */
interface KeyStore {
  create(body: KeyCreateFlags): Promise<KeyCreated>;
  list(): Promise<KeyObject[]>;
  revoke(prefix: string): Promise<KeyObject>;
  setLimits(prefix: string, patch: KeyLimitsPatch): Promise<KeyObject>;
}

/** The admin API, on the API key's own org; --org, when given, must be that org (the API checks). */
function gatewayStore(flags: KeysFlags): KeyStore {
  const org = flags.org ? `?org=${encodeURIComponent(flags.org)}` : "";
  const keyPath = (prefix: string) => `/v1/keys/${encodeURIComponent(prefix)}${org}`;
  return {
    create: async (body) =>
      KeyCreated.parse(await callGateway(flags, "POST", `/v1/keys${org}`, jsonBody(body))),
    list: async () => KeyList.parse(await callGateway(flags, "GET", `/v1/keys${org}`)).data,
    revoke: async (prefix) => KeyObject.parse(await callGateway(flags, "DELETE", keyPath(prefix))),
    setLimits: async (prefix, patch) =>
      KeyObject.parse(await callGateway(flags, "PATCH", keyPath(prefix), jsonBody(patch))),
  };
}

/** Checks what the CLI sends against the API's own schema, so both ways refuse alike, in the same words. */
function validated<T>(schema: z.ZodType<T>, input: unknown): T {
  const parsed = schema.safeParse(input);
  if (!parsed.success) throw invalidBody(parsed.error);
  return parsed.data;
}

/** DATABASE_URL itself, for an org named by --org: no caller, so no scope is out of reach. */
function databaseStore(db: Db, org: string): KeyStore {
  return {
    async create(input) {
      const body = validated(KeyCreate, input);
      await ensureOrg(db, org);
      const { key, record } = await createApiKey(db, {
        orgId: org,
        name: body.name,
        scopes: [...new Set(body.scopes)],
        requestsPerMinute: body.rpm,
        tokensPerMinute: body.tpm,
      });
      return { ...keyObject(record), key };
    },
    list: async () => (await listApiKeys(db, org)).map(keyObject),
    revoke: async (prefix) => keyObject(await revokeApiKey(db, org, prefix)),
    async setLimits(prefix, input) {
      const patch = validated(KeyLimitsPatch, input);
      const updated = await setApiKeyLimits(db, org, prefix, {
        ...(patch.rpm !== undefined ? { requestsPerMinute: patch.rpm } : {}),
        ...(patch.tpm !== undefined ? { tokensPerMinute: patch.tpm } : {}),
      });
      return keyObject(updated);
    },
  };
}

function withKeys(command: string, flags: KeysFlags, action: (store: KeyStore) => Promise<void>) {
  return runCommand(`keys ${command}`, async () => {
    if (gatewayNamed(flags)) return action(gatewayStore(flags));
    const org = flags.org;
    if (!org) {
      throw new CliError(
        "--org is required on DATABASE_URL (name a gateway or an API key to act on that key's org)",
      );
    }
    await usingDb((db) => action(databaseStore(db, org)));
  });
}

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

/** A prefix as typed: one pasted from `keys list` ends in its "…" (or "..."), which is no part of the key. */
const typedPrefix = (prefix: string) => prefix.replace(/(…|\.\.\.)$/, "");

const limitOf = (flag: LimitFlag | undefined): number | null | undefined => (flag === "none" ? null : flag);

const instant = (seconds: number | null) => (seconds === null ? "-" : instantCell(seconds));

function print(flags: KeysFlags, value: unknown, text: string): void {
  process.stdout.write(flags.json ? `${JSON.stringify(value)}\n` : `${text}\n`);
}

/** DATABASE_URL is also how an org's first admin key is made: there is no key yet to call the gateway with. */
const KEYS_HELP = `${GATEWAY_OR_DATABASE} An org's first admin key is made that way.`;

export function registerKeys(program: Command): void {
  const keys = program
    .command("keys")
    .description("manage API keys, through the gateway or on DATABASE_URL")
    .addHelpText("after", KEYS_HELP);
  const common = (command: Command) =>
    gatewayOptions(command, "an API key with the admin scope")
      .option("--org <org>", "organization id; required on DATABASE_URL, else the API key's own org")
      .option("--json", "print the API's JSON instead of text")
      .addHelpText("after", KEYS_HELP);

  common(
    keys
      .command("create")
      .description("create an API key, shown once; on DATABASE_URL, creates the org if it does not exist")
      .option("--name <name>", "what the key is for", "default")
      .option("--scope <scope>", 'a scope: "admin", for the management routes (repeatable)', collect, [])
      .option("--rpm <n>", "most requests per minute through this key (default: no limit)", perMinute)
      .option(
        "--tpm <n>",
        "most tokens (prompt + max_tokens) per minute through this key (default: no limit)",
        perMinute,
      ),
  ).action((flags: KeysFlags & { name: string; scope: string[]; rpm?: LimitFlag; tpm?: LimitFlag }) =>
    withKeys("create", flags, async (store) => {
      const created = await store.create({
        name: flags.name,
        scopes: flags.scope,
        rpm: limitOf(flags.rpm) ?? null,
        tpm: limitOf(flags.tpm) ?? null,
      });
      process.stderr.write(
        `created key ${created.prefix}… for org ${created.org} (scopes: ${created.scopes.join(", ") || "none"}; ` +
          `rpm: ${created.rpm ?? "none"}; tpm: ${created.tpm ?? "none"}); it is shown only once\n`,
      );
      // The key alone goes to stdout, so `KEY=$(luminet keys create …)` captures exactly it.
      print(flags, created, created.key);
    }),
  );

  common(keys.command("list").description("list the org's API keys, revoked ones included")).action(
    (flags: KeysFlags) =>
      withKeys("list", flags, async (store) => {
        const data = await store.list();
        const list: KeyList = { object: "list", data };
        const rows = data.map((k) => [
          `${k.prefix}…`,
          k.name,
          k.scopes.join(",") || "-",
          k.rpm === null ? "-" : String(k.rpm),
          k.tpm === null ? "-" : String(k.tpm),
          instant(k.created_at),
          instant(k.last_used_at),
          instant(k.revoked_at),
        ]);
        const header = ["PREFIX", "NAME", "SCOPES", "RPM", "TPM", "CREATED", "LAST USED", "REVOKED"];
        print(flags, list, table(header, rows));
      }),
  );

  common(
    keys
      .command("revoke <prefix>")
      .description(
        "revoke an API key by its prefix: at once on the gateway that revokes it, within 30 s on the others",
      ),
  ).action((prefix: string, flags: KeysFlags) =>
    withKeys("revoke", flags, async (store) => {
      const revoked = await store.revoke(typedPrefix(prefix));
      const used = apiKeyOf(flags);
      const own = gatewayNamed(flags) && used !== undefined && apiKeyPrefix(used) === revoked.prefix;
      print(
        flags,
        revoked,
        `revoked ${revoked.prefix}…${own ? " (the key this command used: this gateway refuses it from now on, others within 30 s)" : ""}`,
      );
    }),
  );

  common(
    keys
      .command("limits <prefix>")
      .description(
        'set a key\'s per-minute limits ("none" removes one); other gateways apply them within 30 s',
      )
      .option("--rpm <n>", 'most requests per minute, or "none"', perMinute)
      .option("--tpm <n>", 'most tokens (prompt + max_tokens) per minute, or "none"', perMinute),
  ).action((prefix: string, flags: KeysFlags & { rpm?: LimitFlag; tpm?: LimitFlag }) =>
    withKeys("limits", flags, async (store) => {
      if (flags.rpm === undefined && flags.tpm === undefined) throw new CliError("give --rpm and/or --tpm");
      const updated = await store.setLimits(typedPrefix(prefix), {
        ...(flags.rpm !== undefined ? { rpm: limitOf(flags.rpm) } : {}),
        ...(flags.tpm !== undefined ? { tpm: limitOf(flags.tpm) } : {}),
      });
      print(
        flags,
        updated,
        `${updated.prefix}…  ${updated.rpm ?? "no"} rpm limit, ${updated.tpm ?? "no"} tpm limit`,
      );
    }),
  );
}
