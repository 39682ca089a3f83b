// `luminet keys` and `luminet usage` through a gateway served over HTTP (the run's Postgres when
// DATABASE_URL is set, else PGlite), and on DATABASE_URL itself: the same output both ways; the created key
// works and stops working at once when revoked; every refusal — no key, an unknown key, a key without the
// admin scope, bad limits, a scope the creator lacks, an unknown prefix, another org's key or org — exits 1
// with the API's message and changes no key. A --gateway that answers a page instead of the API's JSON is
// named in the error.
import { createHash, randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Command } from "commander";
import { eq, inArray } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import type { Bus } from "../../bus/bus.ts";
import { InProcessBroker } from "../../bus/in-process.ts";
import { registerKeys } from "../../cli/commands/keys.ts";
import { registerUsage } from "../../cli/commands/usage.ts";
import { registerWebhooks } from "../../cli/commands/webhooks.ts";
import { migrate } from "../../db/migrate.ts";
import { type Db, openDb } from "../../db/open.ts";
import { createApiKey, ensureOrg } from "../../gateway/api-keys.ts";
import { createApp } from "../../gateway/app.ts";
import { BaseCatalog } from "../../gateway/bases.ts";
import { gatewayDeps } from "../../gateway/deps.ts";
import { type ServedApp, serveApp } from "../../gateway/node.ts";
import type { UsageReport } from "../../meter/usage-report.ts";
import { apiKeys, type NewUsageEvent, usageEvents } from "../../schema/db.ts";
import { KeyCreated, KeyList, KeyObject } from "../../schema/key-api.ts";
import type { WebhookList } from "../../schema/webhook-api.ts";
import { type CommandRun, luminetInProcess, spawnLuminet } from "../support/luminet-command.ts";

const postgresUrl = inject("postgresUrl");
const suffix = randomUUID().slice(0, 8);
const acme = `acme-${suffix}`;
const other = `other-${suffix}`;

let db: Db;
let bus: Bus;
let served: ServedApp;
const keys = { admin: "", plain: "", otherAdmin: "" };
const keyIds = { admin: "" };

const register = (program: Command) => {
  registerKeys(program);
  registerUsage(program);
  registerWebhooks(program);
};

/** A command through the gateway, the key in LUMINET_API_KEY (or none), the gateway in LUMINET_GATEWAY. */
function viaGateway(args: string[], key: string | undefined = keys.admin): Promise<CommandRun> {
  return luminetInProcess(register, args, { LUMINET_GATEWAY: served.url, LUMINET_API_KEY: key });
}

/** The same command straight on the database: no gateway, no key. */
function onDatabase(args: string[]): Promise<CommandRun> {
  return luminetInProcess(register, args, {
    LUMINET_GATEWAY: undefined,
    LUMINET_API_KEY: undefined,
    DATABASE_URL: postgresUrl,
  });
}

/** Every key of both orgs as stored, but for when each was last used (authenticating moves that). */
async function storedKeys() {
  const rows = await db
    .select()
    .from(apiKeys)
    .where(inArray(apiKeys.orgId, [acme, other]));
  return rows.map(({ lastUsedAt: _, ...row }) => row).sort((a, b) => a.id.localeCompare(b.id));
}

async function refused(args: string[], message: RegExp, key?: string): Promise<void> {
  const before = await storedKeys();
  const run = await viaGateway(args, key);
  expect(run.code, run.stdout).toBe(1);
  expect(run.stderr).toMatch(message);
  expect(run.stdout).toBe("");
  expect(await storedKeys()).toEqual(before);
}

async function modelsStatus(key: string): Promise<number> {
  const response = await fetch(`${served.url}/v1/models`, { headers: { authorization: `Bearer ${key}` } });
  await response.body?.cancel();
  return response.status;
}

const prefixOf = async (key: string) => {
  const hash = createHash("sha256").update(key).digest("hex");
  const [row] = await db.select().from(apiKeys).where(eq(apiKeys.keyHash, hash));
  return row!.prefix;
};

function usage(finishedAt: string, extra: Partial<NewUsageEvent> = {}): NewUsageEvent {
  return {
    requestId: `req-${randomUUID()}`,
    orgId: acme,
    apiKeyId: keyIds.admin,
    base: "tiny",
    adapter: "support-v1",
    inputTokens: 100,
    outputTokens: 20,
    costMicros: 27,
    finishReason: "stop",
    startedAt: new Date(finishedAt),
    finishedAt: new Date(finishedAt),
    ...extra,
  };
}

beforeAll(async () => {
  db = await openDb(postgresUrl || "pglite:memory");
  await migrate(db);
  await ensureOrg(db, acme);
  await ensureOrg(db, other);
  const admin = await createApiKey(db, { orgId: acme, name: "admin", scopes: ["admin"] });
  keys.admin = admin.key;
  keyIds.admin = admin.record.id;
  keys.plain = (await createApiKey(db, { orgId: acme, name: "plain" })).key;
  keys.otherAdmin = (await createApiKey(db, { orgId: other, name: "admin", scopes: ["admin"] })).key;
  await db
    .insert(usageEvents)
    .values([
      usage("2025-03-01T10:00:00Z"),
      usage("2025-03-02T00:00:00Z", { inputTokens: 1_000, outputTokens: 333, costMicros: 350 }),
      usage("2025-03-02T23:59:59.999Z", { apiKeyId: "key-gone", adapter: null, costMicros: 1_234_567 }),
      usage("2025-03-02T12:00:00Z", { orgId: other, costMicros: 9_999 }),
    ]);
  bus = new InProcessBroker().connect();
  served = await serveApp(createApp(gatewayDeps({ db, bus, bases: new BaseCatalog([]) })), 0, "127.0.0.1");
});

afterAll(async () => {
  await served?.close();
  await bus?.close();
  await db?.close();
});

let created = "";

describe("luminet keys through the gateway", () => {
  it("create (the real binary) prints the key alone on stdout; the key works and is stored hashed", async () => {
    // Flags over env: the environment's key has no admin scope and its gateway does not exist.
    const run = await spawnLuminet(
      ["keys", "create", "--name", "ci", "--rpm", "60", "--gateway", served.url, "--api-key", keys.admin],
      { LUMINET_API_KEY: keys.plain, LUMINET_GATEWAY: "http://127.0.0.1:9" },
    );
    expect(run.stderr).toMatch(
      new RegExp(`^created key lk_\\w{8}… for org ${acme} \\(scopes: none; rpm: 60`),
    );
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/^lk_[0-9A-Za-z]{40}\n$/);
    created = run.stdout.trim();
    expect(await modelsStatus(created)).toBe(200);
    const [row] = await db
      .select()
      .from(apiKeys)
      .where(eq(apiKeys.prefix, await prefixOf(created)));
    expect(row).toMatchObject({ orgId: acme, name: "ci", scopes: [], requestsPerMinute: 60 });
    expect(row!.keyHash).toBe(createHash("sha256").update(created).digest("hex"));
    expect(JSON.stringify(await storedKeys())).not.toContain(created);
  });

  it("create --json answers the record with the key once; an admin grants the admin scope", async () => {
    const run = await viaGateway(["keys", "create", "--name", "deputy", "--scope", "admin", "--json"]);
    expect(run.code).toBe(0);
    const answer = KeyCreated.parse(JSON.parse(run.stdout));
    expect(answer).toMatchObject({
      org: acme,
      name: "deputy",
      scopes: ["admin"],
      rpm: null,
      revoked_at: null,
    });
    expect(answer.key.startsWith(answer.prefix)).toBe(true);
    expect(await modelsStatus(answer.key)).toBe(200);
  });

  it("list prints the org's keys only, as a table or the API's JSON", async () => {
    const table = await viaGateway(["keys", "list"]);
    expect(table.code).toBe(0);
    const lines = table.stdout.trimEnd().split("\n");
    expect(lines[0]).toMatch(/^PREFIX\s+NAME\s+SCOPES\s+RPM\s+TPM\s+CREATED\s+LAST USED\s+REVOKED$/);
    expect(lines.slice(1).map((line) => line.split(/\s+/)[1])).toEqual(["admin", "plain", "ci", "deputy"]);
    expect(table.stdout).toMatch(/\s+ci\s+-\s+60\s+-\s+\d{4}-/);
    const json = KeyList.parse(JSON.parse((await viaGateway(["keys", "list", "--json"])).stdout));
    expect(json.data.map((k) => [k.name, k.scopes, k.org])).toEqual([
      ["admin", ["admin"], acme],
      ["plain", [], acme],
      ["ci", [], acme],
      ["deputy", ["admin"], acme],
    ]);
    expect(JSON.stringify(json)).not.toMatch(/key_hash|keyHash/);
  });

  it("limits sets and removes a key's per-minute limits", async () => {
    const prefix = await prefixOf(created);
    const set = await viaGateway(["keys", "limits", prefix, "--tpm", "5000"]);
    expect(set.code).toBe(0);
    expect(set.stdout).toBe(`${prefix}…  60 rpm limit, 5000 tpm limit\n`);
    const removed = await viaGateway(["keys", "limits", prefix.slice(0, 8), "--rpm", "none", "--json"]);
    expect(KeyObject.parse(JSON.parse(removed.stdout))).toMatchObject({ prefix, rpm: null, tpm: 5000 });
    const [row] = await db.select().from(apiKeys).where(eq(apiKeys.prefix, prefix));
    expect(row).toMatchObject({ requestsPerMinute: null, tokensPerMinute: 5000 });
  });

  it("limits and revoke take a prefix pasted from list, its trailing … (or ...) left out", async () => {
    const listed = (await viaGateway(["keys", "list"])).stdout.split("\n");
    const pasted = listed.find((line) => line.split(/\s+/)[1] === "ci")!.split(/\s+/)[0]!;
    const prefix = await prefixOf(created);
    expect(pasted).toBe(`${prefix}…`);
    const set = await viaGateway(["keys", "limits", pasted, "--rpm", "2"]);
    expect(set.code, set.stderr).toBe(0);
    expect(set.stdout).toBe(`${prefix}…  2 rpm limit, 5000 tpm limit\n`);
    const dots = await onDatabase(["keys", "limits", `${prefix}...`, "--org", acme, "--rpm", "none"]);
    expect(dots.code, dots.stderr).toBe(0);
    const [row] = await db.select().from(apiKeys).where(eq(apiKeys.prefix, prefix));
    expect(row).toMatchObject({ requestsPerMinute: null, tokensPerMinute: 5000 });
  });

  it("refuses without a key, with an unknown key and with a key that lacks the admin scope", async () => {
    await refused(["keys", "list"], /no API key: pass --api-key or set LUMINET_API_KEY/, "");
    await refused(
      ["keys", "list"],
      /Incorrect or revoked API key provided: lk_xxxxxxxx…/,
      `lk_${"x".repeat(40)}`,
    );
    await refused(["keys", "create"], /This route needs an API key with the "admin" scope/, keys.plain);
    await refused(["keys", "list"], /This route needs an API key with the "admin" scope/, keys.plain);
  });

  it("refuses bad limits, scopes its creator lacks and malformed scopes", async () => {
    const prefix = await prefixOf(created);
    await refused(
      ["keys", "limits", prefix, "--rpm", "0"],
      /luminet keys limits: Invalid value for 'rpm': .*>=1/,
    );
    await refused(["keys", "create", "--tpm", "2147483648"], /Invalid value for 'tpm': .*<=2147483647/);
    await refused(["keys", "limits", prefix], /luminet keys limits: give --rpm and\/or --tpm/);
    // Only "admin" grants anything: a typo of it is refused, not stored as a scope that grants nothing.
    await refused(
      ["keys", "create", "--scope", "adminn"],
      /Invalid value for 'scopes\.0': a scope is one of: admin/,
    );
  });

  it("refuses an unknown prefix, another org's key and another org by name", async () => {
    await refused(
      ["keys", "revoke", "lk_zzzzzzzz"],
      new RegExp(`org "${acme}" has no live key starting with "lk_zzzzzzzz"`),
    );
    await refused(["keys", "revoke", "lk_a"], /give at least 7 characters of the key's prefix/);
    const theirs = await prefixOf(keys.otherAdmin);
    await refused(
      ["keys", "revoke", theirs],
      new RegExp(`org "${acme}" has no live key starting with "${theirs}"`),
    );
    await refused(["keys", "limits", theirs, "--rpm", "1"], /has no live key starting with/);
    await refused(
      ["keys", "list", "--org", other],
      new RegExp(`belongs to org '${acme}' and cannot act on org '${other}'`),
    );
    await refused(
      ["usage", "--org", other],
      new RegExp(`belongs to org '${acme}' and cannot act on org '${other}'`),
    );
    expect(await modelsStatus(keys.otherAdmin)).toBe(200);
  });

  it("revoke: the key stops working at once on this gateway; a second revoke finds no live key", async () => {
    const prefix = await prefixOf(created);
    // As list prints it.
    const run = await viaGateway(["keys", "revoke", `${prefix}…`]);
    expect(run.code).toBe(0);
    expect(run.stdout).toBe(`revoked ${prefix}…\n`);
    expect(await modelsStatus(created)).toBe(401);
    const list = KeyList.parse(JSON.parse((await viaGateway(["keys", "list", "--json"])).stdout));
    expect(list.data.find((k) => k.prefix === prefix)?.revoked_at).toEqual(expect.any(Number));
    await refused(["keys", "revoke", prefix], /has no live key starting with/);
  });
});

describe("luminet usage through the gateway", () => {
  it("prints GET /v1/usage's report for the key's org (the real binary)", async () => {
    const run = await spawnLuminet(
      ["usage", "--since", "2025-03-02", "--until", "2025-03-02", "--json", "--gateway", served.url],
      { LUMINET_API_KEY: keys.plain },
    );
    expect(run.stderr).toBe("");
    expect(run.code).toBe(0);
    const totals = {
      requests: 2,
      input_tokens: 1100,
      cached_input_tokens: 0,
      output_tokens: 353,
      total_tokens: 1453,
      cost_micros: 1_234_917,
      cost_usd: "1.234917",
    };
    expect(JSON.parse(run.stdout) as UsageReport).toEqual({
      object: "usage.report",
      group_by: "day",
      org: acme,
      start: "2025-03-02T00:00:00.000Z",
      end: "2025-03-03T00:00:00.000Z",
      base: null,
      data: [{ org: acme, day: "2025-03-02", ...totals }],
      total: totals,
    });
  });

  it("labels keys for an admin key and shows key ids to a key without the admin scope", async () => {
    const admin = await viaGateway(["usage", "--by", "key"]);
    expect(admin.code).toBe(0);
    expect(admin.stdout).toMatch(/lk_\w{8}… \(admin\)\s+2\s+1100\s+0\s+353\s+\$0\.000377/);
    expect(admin.stdout).toMatch(/key-gone\s+1\s+100\s+0\s+20\s+\$1\.234567/);
    const plain = await viaGateway(["usage", "--by", "key"], keys.plain);
    expect(plain.code).toBe(0);
    expect(plain.stdout).toContain(`${keyIds.admin}  `);
    expect(plain.stdout).not.toContain("(admin)");
  });

  it("refuses bad flags and bad keys with a message and exit 1", async () => {
    await refused(["usage", "--by", "week"], /--by must be one of day, adapter, key, tier, got "week"/);
    await refused(
      ["usage", "--since", "2025-02-30"],
      /--since must be a day as YYYY-MM-DD, got "2025-02-30"/,
    );
    await refused(["usage"], /Incorrect or revoked API key provided/, `lk_${"y".repeat(40)}`);
  });
});

describe.skipIf(!postgresUrl)("the same commands on DATABASE_URL", () => {
  it("print exactly what they print through the gateway", async () => {
    for (const args of [
      ["keys", "list"],
      ["keys", "list", "--json"],
      ["usage", "--by", "key"],
      ["usage", "--by", "tier"],
      ["usage", "--by", "adapter", "--since", "2025-03-02", "--json"],
      ["usage", "--until", "2025-03-01"],
    ]) {
      const gateway = await viaGateway([...args, "--org", acme]);
      const database = await onDatabase([...args, "--org", acme]);
      expect(gateway.code, gateway.stderr).toBe(0);
      expect(database.stdout, args.join(" ")).toBe(gateway.stdout);
    }
  });

  it("create, limits and revoke there too, with the same validation; --org is required", async () => {
    expect((await onDatabase(["keys", "list"])).stderr).toMatch(/--org is required on DATABASE_URL/);
    const create = await onDatabase(["keys", "create", "--org", acme, "--name", "ops", "--scope", "admin"]);
    expect(create.code).toBe(0);
    expect(create.stdout).toMatch(/^lk_[0-9A-Za-z]{40}\n$/);
    const key = create.stdout.trim();
    const prefix = await prefixOf(key);
    for (const args of [
      ["keys", "limits", prefix, "--rpm", "0"],
      ["keys", "create", "--scope", "adminn"],
    ]) {
      const database = await onDatabase([...args, "--org", acme]);
      const gateway = await viaGateway(args);
      expect(database.code).toBe(1);
      expect(database.stderr).toBe(gateway.stderr);
    }
    expect((await onDatabase(["keys", "limits", prefix, "--org", acme, "--tpm", "10"])).stdout).toBe(
      `${prefix}…  no rpm limit, 10 tpm limit\n`,
    );
    expect((await onDatabase(["keys", "revoke", prefix, "--org", acme])).stdout).toBe(`revoked ${prefix}…\n`);
  });
});

describe("luminet webhooks through the gateway", () => {
  it("creates an endpoint printing its secret alone, lists it without the secret, deletes it; refuses a bad URL or a key without the admin scope", async () => {
    const create = await viaGateway([
      "webhooks",
      "create",
      "--url",
      "https://hooks.example.com/in",
      "--events",
      "batch.completed, batch.expired",
    ]);
    expect(create.code).toBe(0);
    expect(create.stdout).toMatch(/^whsec_[A-Za-z0-9+/]{43}=\n$/);
    const listed = await viaGateway(["webhooks", "list", "--json"]);
    // The API's list object, as `adapters list --json` and `keys list --json` print theirs.
    const list = JSON.parse(listed.stdout) as WebhookList;
    expect(list.object).toBe("list");
    const [endpoint] = list.data;
    expect(endpoint).toMatchObject({
      url: "https://hooks.example.com/in",
      events: ["batch.completed", "batch.expired"],
    });
    expect(listed.stdout).not.toContain(create.stdout.trim());
    const table = await viaGateway(["webhooks", "list"]);
    expect(table.stdout).toContain(endpoint!.id);
    expect(table.stdout).toContain("batch.completed,batch.expired");

    const badUrl = await viaGateway(["webhooks", "create", "--url", "http://10.0.0.1/in"]);
    expect(badUrl.code).toBe(1);
    expect(badUrl.stderr).toContain("url must be a public address");
    const plain = await viaGateway(["webhooks", "list"], keys.plain);
    expect(plain.code).toBe(1);
    expect(plain.stderr).toContain('"admin" scope');

    const deleted = await viaGateway(["webhooks", "delete", endpoint!.id]);
    expect(deleted.stdout).toBe(`deleted ${endpoint!.id}\n`);
    expect(JSON.parse((await viaGateway(["webhooks", "list", "--json"])).stdout)).toEqual({
      object: "list",
      data: [],
    });
  });
});

describe("a --gateway that answers a page, not the API's JSON", () => {
  it("fails naming the URL it called, on stderr with exit 1", async () => {
    const page = createServer((_req, res) => {
      res.writeHead(200, { "content-type": "text/html" }).end("<!DOCTYPE html><title>Sign in</title>");
    });
    await new Promise<void>((listening) => page.listen(0, "127.0.0.1", listening));
    const url = `http://127.0.0.1:${(page.address() as AddressInfo).port}/dashboard`;
    try {
      for (const [command, path] of [
        [["webhooks", "list"], "/v1/webhooks"],
        [["keys", "list"], "/v1/keys"],
      ] as const) {
        const run = await luminetInProcess(register, [...command, "--gateway", url], {
          LUMINET_API_KEY: keys.admin,
        });
        expect(run.code).toBe(1);
        expect(run.stdout).toBe("");
        expect(run.stderr).toBe(
          `luminet ${command.join(" ")}: ${url}${path} did not answer JSON (is --gateway the gateway's URL?)\n`,
        );
      }
    } finally {
      page.close();
    }
  });
});

describe("revoking the key a command calls with", () => {
  it("is allowed, says so, and the key is refused from the next request on", async () => {
    const prefix = await prefixOf(keys.admin);
    const run = await viaGateway(["keys", "revoke", prefix]);
    expect(run.code).toBe(0);
    expect(run.stdout).toBe(
      `revoked ${prefix}… (the key this command used: this gateway refuses it from now on, others within 30 s)\n`,
    );
    await refused(["keys", "list"], /Incorrect or revoked API key provided/);
  });
});

describe("the database a command on DATABASE_URL opens by default", () => {
  it("is the one `luminet dev` keeps in LUMINET_HOME, not one in the working directory", async () => {
    const home = mkdtempSync(join(tmpdir(), "luminet-home-"));
    try {
      const devDb = await openDb(`pglite:${home}/db`);
      await migrate(devDb);
      await ensureOrg(devDb, "demo");
      const created = await createApiKey(devDb, { orgId: "demo", name: "dev key" });
      await devDb.close();
      const run = await luminetInProcess(register, ["keys", "list", "--org", "demo", "--json"], {
        LUMINET_GATEWAY: undefined,
        LUMINET_API_KEY: undefined,
        DATABASE_URL: undefined,
        LUMINET_HOME: home,
      });
      expect(run.code, run.stderr).toBe(0);
      expect(KeyList.parse(JSON.parse(run.stdout)).data.map((key) => key.id)).toEqual([created.record.id]);
    } finally {
      rmSync(home, { recursive: true, force: true });
    }
  });
});
