// The database foundation on PGlite (always) and on the machine's real Postgres (when DATABASE_URL is
// set): migrations, the tables' constraints, idempotent usage inserts and the rollup queries they serve.
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { and, eq, isNull, sql, sum } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { migrate } from "../../db/migrate.ts";
import { DatabaseUrlError, type Db, describeDatabaseUrl, openDb } from "../../db/open.ts";
import { DatabaseInUseError } from "../../db/pglite-lock.ts";
import {
  listChatCompletions,
  loadChatCompletion,
  saveChatCompletion,
} from "../../gateway/chat-completion-store.ts";
import { conversationBytesHeld } from "../../gateway/conversation-storage-quota.ts";
import {
  allItems,
  appendItems,
  createConversation,
  loadConversation,
  refuseTaken,
} from "../../gateway/conversation-store.ts";
import {
  loadResponse,
  markBackground,
  saveBackgroundRun,
  saveResponse,
} from "../../gateway/response-store.ts";
import type { ChatCompletion } from "../../schema/api.ts";
import {
  adapters,
  apiKeys,
  baseModels,
  conversationItems,
  conversationStorage,
  conversations,
  type NewAdapter,
  type NewUsageEvent,
  orgs,
  responseEvents,
  responseStorage,
  storedChatCompletions,
  storedResponses,
  usageDay,
  usageEvents,
} from "../../schema/db.ts";
import type { InputItem, ResponseObject } from "../../schema/responses-api.ts";
import type { ChatCompletionListQuery, StoredRequest } from "../../schema/stored-chat-api.ts";
import { storedChatCompletionBytes, storedResponseBytes } from "../support/stored-bytes.ts";
import { storeSamples } from "../support/stored-samples.ts";

const postgresUrl = inject("postgresUrl");
const base = "meta/llama-4-maverick";
const migrationCount: number = JSON.parse(readFileSync("schema/migrations/meta/_journal.json", "utf8"))
  .entries.length;

const adapter = (org: string, name: string, extra: Partial<NewAdapter> = {}): NewAdapter => ({
  orgId: org,
  name,
  base,
  rank: 16,
  alpha: 32,
  targetModules: ["q_proj", "v_proj"],
  blobKey: `${org}/${name}.safetensors`,
  ...extra,
});

const usage = (requestId: string, extra: Partial<NewUsageEvent> = {}): NewUsageEvent => ({
  requestId,
  orgId: "acme",
  apiKeyId: "key-1",
  base,
  adapter: "support-v1",
  inputTokens: 100,
  outputTokens: 20,
  costMicros: 27,
  finishReason: "stop",
  startedAt: new Date("2025-03-01T10:00:00Z"),
  finishedAt: new Date("2025-03-01T10:00:02Z"),
  ...extra,
});

/** drizzle wraps driver errors; the Postgres message sits on the cause. */
async function failure(query: Promise<unknown>): Promise<string> {
  const error = await query.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(Error);
  const { message, cause } = error as Error;
  return `${message} ${cause instanceof Error ? cause.message : ""}`;
}

const targets = [
  { name: "PGlite", url: "pglite:memory" },
  { name: "Postgres", url: postgresUrl },
];

for (const { name, url } of targets) {
  describe.skipIf(!url)(`the database on ${name}`, () => {
    let db: Db;

    beforeAll(async () => {
      db = await openDb(url);
      await migrate(db);
      await db.insert(orgs).values([
        { id: "acme", name: "Acme" },
        { id: "globex", name: "Globex" },
      ]);
      await db.insert(baseModels).values({
        name: base,
        architecture: {
          family: "LlamaForCausalLM",
          layers: 48,
          hiddenSize: 5120,
          intermediateSize: 8192,
          attentionHeads: 40,
          kvHeads: 8,
          headDim: 128,
          vocabSize: 202048,
        },
        contextLength: 131072,
        inputPriceMicrosPerMillion: 150_000,
        outputPriceMicrosPerMillion: 600_000,
      });
    });

    afterAll(async () => {
      await db?.close();
    });

    it("re-applying migrations changes nothing", async () => {
      expect(await migrate(db)).toEqual({ applied: 0, total: migrationCount });
    });

    it("counts, in migration 0024, what conversations written before it hold and where their next items go", async () => {
      const item = { type: "message", role: "user", content: "Grüße ☃", id: "msg_before" };
      await db.insert(conversations).values({ id: "conv_before", orgId: "globex", metadata: { k: "v" } });
      await db.insert(conversationItems).values([
        { conversationId: "conv_before", position: 0, id: "msg_before", item },
        {
          conversationId: "conv_before",
          position: 1,
          id: "msg_before_2",
          item: { ...item, id: "msg_before_2" },
        },
      ]);
      const backfill = readFileSync("schema/migrations/0024_conversation_storage.sql", "utf8")
        .split("--> statement-breakpoint")
        .filter((statement) => /^\s*(--.*\n\s*)*(UPDATE|INSERT INTO)\b/.test(statement));
      expect(backfill).toHaveLength(3);
      for (const statement of backfill) await db.execute(sql.raw(statement));
      const [stored] = await db
        .select({
          metadata: sql<number>`octet_length(${conversations.metadata}::text)`.mapWith(Number),
          items:
            sql<number>`(select sum(octet_length(item::text)) from conversation_items where conversation_id = 'conv_before')`.mapWith(
              Number,
            ),
        })
        .from(conversations)
        .where(eq(conversations.id, "conv_before"));
      const expected = stored!.items + stored!.metadata;
      expect(stored!.items).toBeGreaterThan(2 * JSON.stringify(item).length);
      const [conversation] = await db.select().from(conversations).where(eq(conversations.id, "conv_before"));
      expect([conversation!.bytes, conversation!.nextPosition]).toEqual([expected, 2]);
      expect(await conversationBytesHeld(db, "globex")).toBe(expected);
      await db.delete(conversations).where(eq(conversations.id, "conv_before"));
      await db.delete(conversationStorage);
    });

    it("counts, in migration 0026, what stored responses, their event logs and chat completions written before it hold, and each write after", async () => {
      const held = async () =>
        (
          await db
            .select({
              org: responseStorage.orgId,
              bytes: sql<number>`sum(${responseStorage.bytes})`.mapWith(Number),
            })
            .from(responseStorage)
            .groupBy(responseStorage.orgId)
            .orderBy(responseStorage.orgId)
        ).map(({ org, bytes }) => [org, bytes]);

      await storeSamples(
        db,
        "globex",
        { response: "resp_before", completion: "chatcmpl-before" },
        "Grüße ☃ 𝄞",
      );
      // An event log, one event out of line (random, so it stays large once compressed).
      await db.insert(responseEvents).values([
        { responseId: "resp_before", sequenceNumber: 0, event: { type: "response.created" } },
        {
          responseId: "resp_before",
          sequenceNumber: 1,
          event: { type: "response.completed", text: randomBytes(30_000).toString("base64") },
        },
      ]);
      const [r] = await db.select({ bytes: storedResponseBytes }).from(storedResponses);
      expect(r!.bytes).toBeGreaterThan(30_000);
      const [c] = await db.select({ bytes: storedChatCompletionBytes }).from(storedChatCompletions);
      // Written by the triggers...
      expect(await held()).toEqual([["globex", r!.bytes + c!.bytes]]);
      // ...and by the backfill, as for rows from before the migration.
      await db.update(storedResponses).set({ eventBytes: 0 });
      const backfill = readFileSync("schema/migrations/0026_response_storage.sql", "utf8")
        .split("--> statement-breakpoint")
        .filter((statement) => /^\s*(--.*\n\s*)*(UPDATE|INSERT INTO)\b/.test(statement));
      expect(backfill).toHaveLength(2);
      const [eventLogs, rows] = backfill as [string, string];
      await db.execute(sql.raw(eventLogs));
      // In the migration the triggers are created after that statement: drop what they counted of it.
      await db.delete(responseStorage);
      await db.execute(sql.raw(rows));
      expect(await held()).toEqual([["globex", r!.bytes + c!.bytes]]);
      // An update counts the difference, a delete frees the row's bytes.
      await db.update(storedResponses).set({
        response: sql`${storedResponses.response} || '{"error": {"code": "x", "message": "longer"}}'::jsonb`,
      });
      const [after] = await db.select({ bytes: storedResponseBytes }).from(storedResponses);
      await db.delete(storedChatCompletions);
      expect(await held()).toEqual([["globex", after!.bytes]]);
      await db.delete(storedResponses);
      expect(await held()).toEqual([["globex", 0]]);
      await db.delete(responseStorage);
    });

    it("keeps text holding U+0000 or a lone surrogate in stored responses, conversations and chat completions, as it was sent", async () => {
      // Model output may hold any character; jsonb refuses U+0000, so the stores encode it (schema/text-safe-jsonb.ts).
      const odd = "nul\u0000 then \uffff0 and \\u0000, half a pair \ud800";
      const response = (id: string, status: string, text: string) =>
        ({
          id,
          object: "response",
          created_at: 1_700_000_000,
          status,
          output_text: text,
        }) as unknown as ResponseObject;
      const item = { id: "msg_odd", type: "message", role: "user", content: odd } as InputItem;

      await saveResponse(db, "acme", {
        response: response("resp_odd", "completed", odd),
        items: [item],
        previous: null,
      });
      const kept = await loadResponse(db, "acme", "resp_odd");
      expect(kept?.response).toMatchObject({ output_text: odd });
      expect(kept?.conversation).toEqual([item]);

      // A background response: moved on and finished through raw SQL (|| and a jsonb cast), the text still kept.
      await saveResponse(db, "acme", {
        response: response("resp_bg", "queued", ""),
        items: [item],
        previous: null,
      });
      expect(await markBackground(db, "resp_bg", "in_progress")).toBe(true);
      expect(
        await saveBackgroundRun(db, "acme", {
          response: response("resp_bg", "completed", odd),
          items: [],
          previous: null,
        }),
      ).toBe(true);
      expect((await loadResponse(db, "acme", "resp_bg"))?.response).toMatchObject({
        status: "completed",
        output_text: odd,
      });
      expect(await markBackground(db, "resp_bg", "failed", { code: "server_error", message: odd })).toBe(
        false,
      );

      await createConversation(
        db,
        "acme",
        {
          id: "conv_odd",
          metadata: { note: odd },
          items: [item],
          createdAt: new Date(),
        },
        { maxOrgBytes: 2 ** 20, param: "items" },
      );
      const more = [{ ...item, id: "msg_odd_2" }];
      expect(
        await appendItems(db, "acme", "conv_odd", {
          items: more,
          createdAt: new Date(),
          taken: refuseTaken(more, "items"),
        }),
      ).toEqual(more);
      expect(await allItems(db, "acme", "conv_odd")).toEqual([item, { ...item, id: "msg_odd_2" }]);
      expect((await loadConversation(db, "acme", "conv_odd"))?.metadata).toEqual({ note: odd });

      const completion = {
        id: "chatcmpl-odd",
        object: "chat.completion",
        created: 1_700_000_000,
        model: base,
        choices: [{ index: 0, message: { role: "assistant", content: odd }, finish_reason: "stop" }],
      } as unknown as ChatCompletion;
      await saveChatCompletion(db, "acme", {
        completion,
        request: {} as StoredRequest,
        messages: [{ role: "user", content: odd }],
        metadata: { note: odd },
        createdAt: new Date(),
      });
      expect(await loadChatCompletion(db, "acme", "chatcmpl-odd")).toMatchObject({
        choices: [{ message: { content: odd } }],
        metadata: { note: odd },
      });
      // The metadata filter matches the stored, encoded value.
      const page = await listChatCompletions(db, "acme", {
        metadata: { note: odd },
        order: "asc",
        limit: 10,
      } as ChatCompletionListQuery);
      expect(page.data.map((c) => c.id)).toEqual(["chatcmpl-odd"]);
    });

    it("adds an item id to a conversation once when additions naming it race: the others are refused (400), not failed", async () => {
      await createConversation(
        db,
        "acme",
        { id: "conv_race", metadata: {}, items: [], createdAt: new Date() },
        { maxOrgBytes: 2 ** 20, param: "items" },
      );
      const adds = await Promise.allSettled(
        ["one", "two", "three", "four"].map((text) => {
          const items = [{ type: "message" as const, role: "user" as const, content: text, id: "msg_once" }];
          return appendItems(db, "acme", "conv_race", {
            items,
            createdAt: new Date(),
            taken: refuseTaken(items, "items"),
          });
        }),
      );
      expect(adds.filter((add) => add.status === "fulfilled")).toHaveLength(1);
      for (const add of adds) {
        if (add.status === "rejected") expect(add.reason).toMatchObject({ status: 400, param: "items.0" });
      }
      expect(await allItems(db, "acme", "conv_race")).toHaveLength(1);
    });

    it("stores an org's key, base model, adapter and usage and reads them back", async () => {
      const [key] = await db
        .insert(apiKeys)
        .values({
          orgId: "acme",
          keyHash: "ab".repeat(32),
          prefix: "lm-acme-1234",
          name: "ci",
          scopes: ["infer"],
        })
        .returning();
      expect(key).toMatchObject({
        orgId: "acme",
        prefix: "lm-acme-1234",
        scopes: ["infer"],
        revokedAt: null,
      });
      expect(key?.createdAt).toBeInstanceOf(Date);

      const [stored] = await db.insert(adapters).values(adapter("acme", "support-v1")).returning();
      expect(stored).toMatchObject({
        trafficWeight: 100,
        pinned: false,
        status: "uploading",
        targetModules: ["q_proj", "v_proj"],
        bytes: null,
      });
      await db
        .update(adapters)
        .set({ status: "ready", bytes: 6_000_000_000, sha256: "cd".repeat(32) })
        .where(eq(adapters.id, stored!.id));

      await db.insert(usageEvents).values(usage("req-readback"));
      const [row] = await db.select().from(usageEvents).where(eq(usageEvents.requestId, "req-readback"));
      // A row written without the prefix cache's count (as before it existed) has 0 cached input tokens,
      // and one written without the batch, priority or waived flag is none of them.
      expect(row).toEqual({
        ...usage("req-readback"),
        cachedInputTokens: 0,
        batch: false,
        priority: false,
        waived: false,
      });

      const [model] = await db.select().from(baseModels).where(eq(baseModels.name, base));
      expect(model?.architecture.kvHeads).toBe(8);
      // No cached input price unless one is set: cached input costs the input price.
      expect(model?.cachedInputPriceMicrosPerMillion).toBeNull();
      // Batch lines pay the full price unless a batch percent is set.
      expect(model?.batchPricePercent).toBe(100);
      expect(model?.priorityPricePercent).toBe(100);
      const [ready] = await db.select().from(adapters).where(eq(adapters.id, stored!.id));
      expect(ready).toMatchObject({ status: "ready", bytes: 6_000_000_000 });
    });

    it("a redelivered usage event inserts no second row", async () => {
      await db.insert(usageEvents).values(usage("req-dup")).onConflictDoNothing();
      await db
        .insert(usageEvents)
        .values(usage("req-dup", { outputTokens: 999 }))
        .onConflictDoNothing();
      const rows = await db.select().from(usageEvents).where(eq(usageEvents.requestId, "req-dup"));
      expect(rows).toHaveLength(1);
      expect(rows[0]?.outputTokens).toBe(20);
    });

    it("refuses a traffic weight above 100", async () => {
      const message = await failure(
        db.insert(adapters).values(adapter("acme", "heavy", { trafficWeight: 101 })),
      );
      expect(message).toContain("adapters_traffic_weight_range");
    });

    it("refuses a ready adapter without its size and hash", async () => {
      const message = await failure(
        db.insert(adapters).values(adapter("acme", "hollow", { status: "ready" })),
      );
      expect(message).toContain("adapters_ready_has_blob");
    });

    it("keeps adapter names unique per org among adapters not deleted", async () => {
      await db.insert(adapters).values(adapter("acme", "sales-v1"));
      const message = await failure(db.insert(adapters).values(adapter("acme", "sales-v1")));
      expect(message).toContain("adapters_org_name_live_idx");

      await db.insert(adapters).values(adapter("globex", "sales-v1"));
      await db
        .update(adapters)
        .set({ status: "deleted", deletedAt: new Date() })
        .where(and(eq(adapters.orgId, "acme"), eq(adapters.name, "sales-v1")));
      await db.insert(adapters).values(adapter("acme", "sales-v1"));
      const live = await db
        .select()
        .from(adapters)
        .where(and(eq(adapters.name, "sales-v1"), isNull(adapters.deletedAt)));
      expect(live.map((a) => a.orgId).sort()).toEqual(["acme", "globex"]);
    });

    it("rolls usage up by UTC day and adapter", async () => {
      const at = (iso: string) => ({ startedAt: new Date(iso), finishedAt: new Date(iso) });
      await db.insert(usageEvents).values([
        usage("roll-1", { orgId: "roll", adapter: "a", ...at("2025-04-01T00:00:00Z") }),
        usage("roll-2", {
          orgId: "roll",
          adapter: "a",
          inputTokens: 7,
          costMicros: 13,
          ...at("2025-04-01T23:59:59Z"),
        }),
        usage("roll-3", { orgId: "roll", adapter: null, ...at("2025-04-01T12:00:00Z") }),
        // 23:30 on March 31 in New York, April 1 in UTC: days are UTC days.
        usage("roll-4", { orgId: "roll", adapter: "a", ...at("2025-04-01T03:30:00Z") }),
        usage("roll-5", {
          orgId: "roll",
          adapter: "a",
          outputTokens: 1,
          costMicros: 16,
          ...at("2025-04-02T00:00:00Z"),
        }),
        usage("other-org", { orgId: "acme", adapter: "a", ...at("2025-04-01T12:00:00Z") }),
      ]);
      // Rollups must not depend on the session's time zone: run this one in New York.
      const rows = await db.transaction(async (tx) => {
        await tx.execute(sql`set local time zone 'America/New_York'`);
        const day = usageDay();
        return tx
          .select({
            day,
            adapter: usageEvents.adapter,
            requests: sql<number>`count(*)::int`,
            inputTokens: sum(usageEvents.inputTokens).mapWith(Number),
            outputTokens: sum(usageEvents.outputTokens).mapWith(Number),
            costMicros: sum(usageEvents.costMicros).mapWith(Number),
          })
          .from(usageEvents)
          .where(eq(usageEvents.orgId, "roll"))
          .groupBy(day, usageEvents.adapter)
          .orderBy(day, usageEvents.adapter);
      });
      expect(rows).toEqual([
        { day: "2025-04-01", adapter: "a", requests: 3, inputTokens: 207, outputTokens: 60, costMicros: 67 },
        { day: "2025-04-01", adapter: null, requests: 1, inputTokens: 100, outputTokens: 20, costMicros: 27 },
        { day: "2025-04-02", adapter: "a", requests: 1, inputTokens: 100, outputTokens: 1, costMicros: 16 },
      ]);
    });
  });
}

describe("database URLs", () => {
  it("name the driver, host and database but never the password", () => {
    const described = describeDatabaseUrl("postgres://luminet:hunter2@db.internal:5432/billing");
    expect(described).toBe("postgres db.internal:5432/billing");
    expect(describeDatabaseUrl("postgresql://u:p@ep-x.neon.tech/main", { driver: "neon" })).toBe(
      "neon ep-x.neon.tech/main",
    );
    expect(describeDatabaseUrl("pglite:")).toBe("pglite (memory)");
    expect(describeDatabaseUrl("pglite:.luminet/db")).toBe("pglite .luminet/db");
  });

  it("refuse an unknown scheme without echoing the URL", async () => {
    const error = await openDb("mysql://root:hunter2@localhost/db").catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DatabaseUrlError);
    expect((error as Error).message).toContain('"mysql:"');
    expect((error as Error).message).not.toContain("hunter2");
  });
});

describe("luminet migrate", () => {
  const dir = mkdtempSync(join(tmpdir(), "luminet-migrate-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const run = () =>
    spawnSync(process.execPath, ["bin/luminet.mjs", "migrate"], {
      encoding: "utf8",
      env: { ...process.env, LOG_LEVEL: "info", DATABASE_URL: `pglite:${join(dir, "nested", "db")}` },
    });

  it("migrates a fresh PGlite folder, then finds it up to date", () => {
    const first = run();
    expect(first.stderr).toBe("");
    expect(first.status).toBe(0);
    expect(JSON.parse(first.stdout)).toMatchObject({ applied: migrationCount, total: migrationCount });
    const second = run();
    expect(second.status).toBe(0);
    expect(JSON.parse(second.stdout)).toMatchObject({ applied: 0, msg: "database already up to date" });
  });
});

describe("a PGlite folder", () => {
  const dir = mkdtempSync(join(tmpdir(), "luminet-pglite-lock-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const url = `pglite:${join(dir, "db")}`;

  it("is open in one process at a time: another is refused with who holds it, until the first closes", async () => {
    const db = await openDb(url);
    try {
      await migrate(db);
      // The CLI in another process, as an operator would run it beside `luminet dev`.
      const beside = spawnSync(process.execPath, ["bin/luminet.mjs", "quota", "show", "--org", "demo"], {
        encoding: "utf8",
        env: { ...process.env, DATABASE_URL: url },
      });
      expect(beside.status).toBe(1);
      expect(beside.stderr).toContain(`is open in process ${process.pid}`);
      // A second open in this process would be a second Postgres on the same files too.
      await expect(openDb(url)).rejects.toThrow(DatabaseInUseError);
    } finally {
      await db.close();
    }
    const again = await openDb(url);
    await again.close();
  });

  it("takes over the lock of a process that is gone", async () => {
    const gone = spawnSync(process.execPath, ["-e", "process.stdout.write(String(process.pid))"], {
      encoding: "utf8",
    });
    writeFileSync(join(dir, "db", "luminet.lock"), `${gone.stdout}\n`);
    const db = await openDb(url);
    await db.close();
  });
});
