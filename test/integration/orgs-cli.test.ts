// `luminet orgs`: lists the orgs with what each may use and what each holds, withdraws or grants the
// priority tier and sets the pin limit; an unknown org or a bad count changes nothing.
import { eq, sql } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { registerOrgs } from "../../cli/commands/orgs.ts";
import { migrate } from "../../db/migrate.ts";
import { openDb } from "../../db/open.ts";
import { ensureOrg } from "../../gateway/api-keys.ts";
import { conversationBytesHeld, jsonBytes } from "../../gateway/conversation-storage-quota.ts";
import { createConversation } from "../../gateway/conversation-store.ts";
import { listOrgs, type OrgSettings } from "../../gateway/orgs.ts";
import { setMonthlyTokenQuota } from "../../meter/token-quota.ts";
import {
  adapters,
  conversationItems,
  conversations,
  files,
  responseEvents,
  responseStorage,
  storedChatCompletions,
  storedResponses,
} from "../../schema/db.ts";
import type { InputItem } from "../../schema/responses-api.ts";
import { luminetInProcess } from "../support/luminet-command.ts";
import { registerBase } from "../support/meter-fixtures.ts";
import { ownDatabase } from "../support/own-database.ts";
import { storedChatCompletionBytes, storedResponseBytes } from "../support/stored-bytes.ts";
import { storeSamples } from "../support/stored-samples.ts";

let url: string;
let drop: () => Promise<void>;

function luminet(...args: string[]) {
  return luminetInProcess(registerOrgs, ["orgs", ...args], { DATABASE_URL: url, LOG_LEVEL: "silent" });
}

async function orgsNow() {
  const db = await openDb(url);
  try {
    return await listOrgs(db);
  } finally {
    await db.close();
  }
}

beforeAll(async () => {
  ({ url, drop } = await ownDatabase("orgs_cli"));
  const db = await openDb(url);
  await migrate(db);
  await ensureOrg(db, "acme");
  await ensureOrg(db, "globex");
  await setMonthlyTokenQuota(db, "globex", 1_000_000);
  await db.close();
});

afterAll(() => drop());

describe("luminet orgs", () => {
  it("lists every org with its priority tier (granted by default) and monthly quota", async () => {
    const list = await luminet("list");
    expect(list.code, list.stderr).toBe(0);
    expect(list.stdout).toMatch(/acme\s+acme\s+yes\s+none\s+none/);
    expect(list.stdout).toMatch(/globex\s+globex\s+yes\s+1000000\s+none/);
    const json = await luminet("list", "--json");
    expect(JSON.parse(json.stdout)).toEqual(await orgsNow());
  });

  it("withdraws the priority tier and grants it again, and refuses an unknown org", async () => {
    const off = await luminet("set-priority", "--org", "acme", "--off", "--json");
    expect(off.code, off.stderr).toBe(0);
    expect(JSON.parse(off.stdout)).toMatchObject({ id: "acme", priority_tier: false });
    expect((await orgsNow()).map((o) => [o.id, o.priority_tier])).toEqual([
      ["acme", false],
      ["globex", true],
    ]);
    const unknown = await luminet("set-priority", "--org", "initech", "--off");
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toMatch(/no org "initech"/);
    expect((await orgsNow()).map((o) => o.id)).toEqual(["acme", "globex"]);
    const on = await luminet("set-priority", "--org", "acme");
    expect(on.stdout).toMatch(/acme\s+acme\s+yes/);
    expect((await orgsNow())[0]!.priority_tier).toBe(true);
  });

  it("sets and clears an org's pin limit, and refuses a count that is not one", async () => {
    const set = await luminet("set-pin-limit", "--org", "globex", "--pins", "4", "--json");
    expect(set.code, set.stderr).toBe(0);
    expect(JSON.parse(set.stdout)).toMatchObject({ id: "globex", pin_limit: 4 });
    for (const bad of ["-1", "2.5", "many", ""]) {
      const refused = await luminet("set-pin-limit", "--org", "globex", "--pins", bad);
      expect(refused.code).toBe(1);
      expect(refused.stderr).toContain("--pins must be a whole number");
    }
    expect((await orgsNow()).map((o) => [o.id, o.pin_limit])).toEqual([
      ["acme", null],
      ["globex", 4],
    ]);
    expect((await luminet("set-pin-limit", "--org", "initech", "--pins", "1")).code).toBe(1);
    const cleared = await luminet("set-pin-limit", "--org", "globex", "--pins", "none");
    expect(cleared.stdout).toMatch(/globex\s+globex\s+yes\s+1000000\s+none/);
  });

  it("shows what each org holds: its files not yet expired, its live adapters, its conversations, its stored responses", async () => {
    // Closed before the command runs: a PGlite database serves one process at a time.
    const db = await openDb(url);
    let conversationBytes: number;
    let responseBytes: number;
    try {
      const day = 86_400_000;
      await db.insert(files).values([
        { id: "file-live", orgId: "acme", purpose: "batch", filename: "a.jsonl", bytes: 1000, content: "" },
        {
          id: "file-expired",
          orgId: "acme",
          purpose: "batch",
          filename: "b.jsonl",
          bytes: 5000,
          content: "",
          expiresAt: new Date(Date.now() - day),
        },
      ]);
      await registerBase(db, "tiny", 0, 0);
      const adapter = { orgId: "acme", base: "tiny", rank: 4, alpha: 8, targetModules: ["q_proj"] };
      await db.insert(adapters).values([
        { ...adapter, name: "live", bytes: 3 * 1024 ** 2, blobKey: "adapters/acme/live" },
        { ...adapter, name: "gone", bytes: 10 ** 9, blobKey: "adapters/acme/gone", deletedAt: new Date() },
      ]);
      const item: InputItem = { type: "message", role: "user", content: "hello", id: "msg_1" };
      await createConversation(
        db,
        "acme",
        { id: "conv_1", metadata: {}, items: [item], createdAt: new Date() },
        { maxOrgBytes: 2 ** 20, param: "items" },
      );
      conversationBytes = jsonBytes({}) + jsonBytes(item);
      await db.insert(storedChatCompletions).values({
        id: "chatcmpl-1",
        orgId: "acme",
        model: "tiny",
        completion: { id: "chatcmpl-1", object: "chat.completion", choices: [] },
        messages: [{ role: "user", content: "hello" }],
      });
      const [row] = await db.select({ bytes: storedChatCompletionBytes }).from(storedChatCompletions);
      responseBytes = row!.bytes;
    } finally {
      await db.close();
    }
    const json = await luminet("list", "--json");
    expect(json.code, json.stderr).toBe(0);
    const listed = JSON.parse(json.stdout) as OrgSettings[];
    const held = (bytes: number) => ({ bytes, limit: null });
    expect(listed.map((o) => [o.id, o.storage])).toEqual([
      [
        "acme",
        {
          files: held(1000),
          adapters: held(3 * 1024 ** 2),
          conversations: held(conversationBytes),
          responses: held(responseBytes),
        },
      ],
      ["globex", { files: held(0), adapters: held(0), conversations: held(0), responses: held(0) }],
    ]);
    const table = await luminet("list");
    expect(table.stdout.split("\n")[0]).toMatch(/PIN LIMIT\s+FILES\s+ADAPTERS\s+CONVERSATIONS\s+RESPONSES$/);
    expect(table.stdout).toMatch(
      new RegExp(`acme .*\\s1000 B\\s+3\\.0 MiB\\s+${conversationBytes} B\\s+${responseBytes} B\n`),
    );
  });

  it("sets an org's own storage limits and sets them back to the gateway's, refusing what is not a size", async () => {
    const set = await luminet(
      "set-storage-limit",
      "--org",
      "acme",
      "--files",
      "2KiB",
      "--conversations",
      "1GiB",
      "--responses",
      "5GB",
      "--json",
    );
    expect(set.code, set.stderr).toBe(0);
    expect(JSON.parse(set.stdout).storage).toMatchObject({
      files: { bytes: 1000, limit: 2048 },
      adapters: { limit: null },
      conversations: { limit: 1024 ** 3 },
      responses: { limit: 5 * 10 ** 9 },
    });
    const table = await luminet("list");
    expect(table.stdout).toMatch(
      /acme .*\s1000 B of 2\.0 KiB\s+3\.0 MiB\s+\d+ B of 1\.0 GiB\s+\d+ B of 4\.7 GiB\n/,
    );

    for (const [flags, message] of [
      [["--files", "lots"], "--files must be a byte count"],
      [["--adapters", "-1"], "--adapters must be a byte count"],
      [["--responses", "many"], "--responses must be a byte count"],
      [[], "give at least one of --files, --adapters, --conversations and --responses"],
    ] as const) {
      const refused = await luminet("set-storage-limit", "--org", "acme", ...flags);
      expect(refused.code).toBe(1);
      expect(refused.stderr).toContain(message);
    }
    expect((await luminet("set-storage-limit", "--org", "initech", "--files", "1GiB")).code).toBe(1);
    expect((await orgsNow())[0]!.storage.files.limit).toBe(2048);

    const back = await luminet("set-storage-limit", "--org", "acme", "--files", "default", "--json");
    expect(JSON.parse(back.stdout).storage).toMatchObject({
      files: { limit: null },
      conversations: { limit: 1024 ** 3 },
    });
  });

  it("recounts an org's stored responses and chat completions after their counts went wrong", async () => {
    const db = await openDb(url);
    const heldBy = async (org: string) =>
      (await listOrgs(db)).find((o) => o.id === org)!.storage.responses.bytes;
    let acmeBefore: number;
    try {
      await storeSamples(db, "globex", { response: "resp_g", completion: "chatcmpl-g" }, "kept");
      await db
        .insert(responseEvents)
        .values({ responseId: "resp_g", sequenceNumber: 0, event: { type: "x" } });
      acmeBefore = await heldBy("acme");
      // What a TRUNCATE or a data-only restore leaves: counts that say too little or too much, and an
      // event log counted twice.
      await db.update(storedResponses).set({ eventBytes: sql`${storedResponses.eventBytes} * 2` });
      await db.delete(responseStorage).where(eq(responseStorage.orgId, "globex"));
      await db.insert(responseStorage).values({ orgId: "globex", shard: 3, bytes: 123_456 });
      expect(await heldBy("globex")).toBe(123_456);
    } finally {
      await db.close();
    }
    const recounted = await luminet("recount-storage", "--org", "globex", "--json");
    expect(recounted.code, recounted.stderr).toBe(0);
    const check = await openDb(url);
    try {
      const [r] = await check
        .select({ bytes: storedResponseBytes })
        .from(storedResponses)
        .where(eq(storedResponses.id, "resp_g"));
      const [c] = await check
        .select({ bytes: storedChatCompletionBytes })
        .from(storedChatCompletions)
        .where(eq(storedChatCompletions.id, "chatcmpl-g"));
      const total = r!.bytes + c!.bytes;
      const [logged] = await check
        .select({ eventBytes: storedResponses.eventBytes })
        .from(storedResponses)
        .where(eq(storedResponses.id, "resp_g"));
      const [events] = await check
        .select({ bytes: sql<number>`sum(pg_column_size(${responseEvents.event}))`.mapWith(Number) })
        .from(responseEvents)
        .where(eq(responseEvents.responseId, "resp_g"));
      expect(logged!.eventBytes).toBe(events!.bytes);
      expect((JSON.parse(recounted.stdout) as OrgSettings[])[0]!.storage.responses.bytes).toBe(total);
      expect((await listOrgs(check)).map((o) => [o.id, o.storage.responses.bytes])).toEqual([
        ["acme", acmeBefore],
        ["globex", total],
      ]);
      // Writes after the recount count on top of it.
      await check.delete(storedChatCompletions).where(eq(storedChatCompletions.id, "chatcmpl-g"));
      expect((await listOrgs(check)).find((o) => o.id === "globex")!.storage.responses.bytes).toBe(r!.bytes);
      await check.delete(storedResponses).where(eq(storedResponses.id, "resp_g"));
    } finally {
      await check.close();
    }
  });

  it("recounts an org's conversations after writes a gateway from before migration 0024 made", async () => {
    const item = (id: string): InputItem => ({ type: "message", role: "user", content: `text of ${id}`, id });
    const db = await openDb(url);
    try {
      const room = { maxOrgBytes: 2 ** 30, param: "items" };
      const kept = { metadata: {}, createdAt: new Date() };
      await createConversation(db, "globex", { id: "conv_kept", items: [item("m1")], ...kept }, room);
      await createConversation(db, "globex", { id: "conv_gone", items: [item("m2")], ...kept }, room);
      // What an older gateway writes: an item added without counting it or moving next_position, a
      // conversation created uncounted, and a counted one deleted without taking its bytes back.
      await db
        .insert(conversationItems)
        .values({ conversationId: "conv_kept", position: 1, id: "m3", item: item("m3") });
      await db.insert(conversations).values({ id: "conv_old", orgId: "globex", metadata: { a: "b" } });
      await db
        .insert(conversationItems)
        .values({ conversationId: "conv_old", position: 0, id: "m4", item: item("m4") });
      await db.delete(conversations).where(eq(conversations.id, "conv_gone"));
    } finally {
      await db.close();
    }
    const recounted = await luminet("recount-storage", "--org", "globex", "--json");
    expect(recounted.code, recounted.stderr).toBe(0);
    const check = await openDb(url);
    try {
      const rows = await check
        .select({
          id: conversations.id,
          bytes: conversations.bytes,
          nextPosition: conversations.nextPosition,
          counted:
            sql<number>`octet_length(${conversations.metadata}::text) + (select sum(octet_length(i.item::text))
            from conversation_items as i where i.conversation_id = "conversations"."id")`.mapWith(Number),
        })
        .from(conversations)
        .where(eq(conversations.orgId, "globex"))
        .orderBy(conversations.id);
      expect(rows.map((r) => [r.id, r.nextPosition])).toEqual([
        ["conv_kept", 2],
        ["conv_old", 1],
      ]);
      // conv_kept's first item was counted by the gateway (compact JSON), the rest as Postgres prints them.
      expect(rows[0]!.bytes).toBeGreaterThan(jsonBytes(item("m1")));
      expect(rows[1]!.bytes).toBe(rows[1]!.counted);
      const total = rows[0]!.bytes + rows[1]!.bytes;
      expect(await conversationBytesHeld(check, "globex")).toBe(total);
      expect((JSON.parse(recounted.stdout) as OrgSettings[])[0]!.storage.conversations.bytes).toBe(total);
    } finally {
      await check.close();
    }
    const unknown = await luminet("recount-storage", "--org", "initech");
    expect([unknown.code, unknown.stderr]).toEqual([1, expect.stringContaining('no org "initech"')]);
  });
});
