// An org's stored responses and stored chat completions together may hold at most the gateway's
// maxOrgResponseBytes (their JSON as the database stores it). What the org's shards count equals, after
// every kind of write (a response stored, one continuing it, a background response queued and moved on, a
// response deleted with its successor rewritten, a chat completion stored, its metadata replaced, deleted,
// the retention sweeps), what the rows hold when recounted; once the org holds its limit a request that
// would store is refused with 400 response_storage_limit_exceeded before it runs, while one with
// `store: false` and another org go on; a delete makes room at once; and an org's own limit replaces the
// gateway's.
import { randomBytes } from "node:crypto";
import { eq, sql } from "drizzle-orm";
import type OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BatchRunner } from "../../gateway/batch-runner.ts";
import { sweepChatCompletions } from "../../gateway/chat-completion-store.ts";
import { setStorageLimits } from "../../gateway/orgs.ts";
import { markBackground, saveResponse, sweepResponses } from "../../gateway/response-store.ts";
import {
  batchRequests,
  responseEvents,
  responseStorage,
  storedChatCompletions,
  storedResponses,
} from "../../schema/db.ts";
import type { ResponseObject } from "../../schema/responses-api.ts";
import type { FakeWorker } from "../support/fake-worker.ts";
import { BASE, type GatewayHarness } from "../support/gateway-harness.ts";
import { jsonCaller } from "../support/json-caller.ts";
import { type ServedGateway, serveGateway } from "../support/served-gateway.ts";
import { storedChatCompletionBytes, storedResponseBytes } from "../support/stored-bytes.ts";

let h: GatewayHarness;
let worker: FakeWorker;
let gateway: ServedGateway;
let client: OpenAI;

beforeAll(async () => {
  gateway = await serveGateway();
  ({ h, worker, client } = gateway);
});
afterAll(() => gateway.close());

/** What the org's shards count. */
async function held(org = "acme"): Promise<number> {
  const [row] = await h.db
    .select({ bytes: sql<number>`coalesce(sum(${responseStorage.bytes}), 0)`.mapWith(Number) })
    .from(responseStorage)
    .where(eq(responseStorage.orgId, org));
  return row!.bytes;
}

/** What the org's stored rows hold, recounted from the rows themselves. */
async function recount(org = "acme"): Promise<number> {
  const [responses] = await h.db
    .select({ bytes: sql<number>`coalesce(sum(${storedResponseBytes}), 0)`.mapWith(Number) })
    .from(storedResponses)
    .where(eq(storedResponses.orgId, org));
  const [completions] = await h.db
    .select({ bytes: sql<number>`coalesce(sum(${storedChatCompletionBytes}), 0)`.mapWith(Number) })
    .from(storedChatCompletions)
    .where(eq(storedChatCompletions.orgId, org));
  return responses!.bytes + completions!.bytes;
}

async function expectCounted(org = "acme"): Promise<void> {
  expect(await held(org)).toBe(await recount(org));
}

/** POSTs JSON as acme (or `key`) to an app whose orgs' stored responses may hold `maxOrgResponseBytes`. */
function poster(maxOrgResponseBytes: number, key = h.keys.acme) {
  return jsonCaller(h.appWith({ limits: { maxOrgResponseBytes } }), key);
}

const chat = (store: boolean) => ({
  model: BASE,
  messages: [{ role: "user" as const, content: "Grüße, ☃" }],
  max_tokens: 2,
  store,
});

describe("an org's stored responses", () => {
  it("counts exactly what its stored responses and chat completions hold through every kind of write", async () => {
    const first = await client.responses.create({
      model: BASE,
      input: "Grüße, ☃ and 𝄞",
      max_output_tokens: 2,
    });
    await expectCounted();
    expect(await held()).toBeGreaterThan(0);
    await client.responses.create({
      model: BASE,
      previous_response_id: first.id,
      input: "and then?",
      max_output_tokens: 2,
    });
    await expectCounted();
    // A background response stored queued, then moved on as its run would.
    const queued = await client.responses.create({ model: BASE, input: "later", background: true });
    await expectCounted();
    expect(await markBackground(h.db, queued.id, "failed", { code: "server_error", message: "gone" })).toBe(
      true,
    );
    await expectCounted();
    // Deleting the first writes the whole conversation into the second.
    await client.responses.delete(first.id);
    await expectCounted();
    // Large rows, stored out of line: compressible, and random (as compressed as it gets).
    const random = randomBytes(60_000).toString("base64");
    for (const [id, text] of [
      ["resp_compressible", "the same words again ".repeat(10_000)],
      ["resp_random", random],
    ] as const) {
      const response = {
        id,
        object: "response",
        created_at: Math.floor(Date.now() / 1000),
        status: "completed",
      };
      await saveResponse(h.db, "acme", {
        response: response as unknown as ResponseObject,
        items: [{ type: "message", role: "user", content: text }],
        previous: null,
      });
      await expectCounted();
    }
    expect(await held()).toBeGreaterThan(random.length);

    const completion = await client.chat.completions.create({
      model: BASE,
      messages: [{ role: "user", content: "Hallo" }],
      max_tokens: 2,
      store: true,
      metadata: { customer: "acme-7" },
    });
    await expectCounted();
    await client.chat.completions.update(completion.id, {
      metadata: { customer: "acme-7, renamed and longer" },
    });
    await expectCounted();
    await client.chat.completions.delete(completion.id);
    await expectCounted();

    // The retention sweeps: everything is older than tomorrow.
    await client.chat.completions.create({
      ...chat(true),
      messages: [{ role: "user", content: "kept a day" }],
    });
    const tomorrow = new Date(Date.now() + 86_400_000);
    await sweepResponses(h.db, tomorrow, 100);
    await sweepChatCompletions(h.db, tomorrow, 100);
    await expectCounted();
    expect(await held()).toBe(0);
  });

  it("counts a streamed background response's event log, and runs a queued response though its org is full", async () => {
    const stream = await client.responses.create({
      model: BASE,
      input: "stream it later",
      max_output_tokens: 4,
      background: true,
      stream: true,
    });
    const followed = (async () => {
      const seen = { id: "", types: [] as string[] };
      for await (const event of stream) {
        seen.types.push(event.type);
        if (event.type === "response.created") seen.id = event.response.id;
      }
      return seen;
    })();
    await expectCounted();
    // The org holds its limit once this response is queued: its run is not refused for it.
    const full = h.appWith({ limits: { maxOrgResponseBytes: await held() } });
    const runner = new BatchRunner({
      app: full,
      db: h.db,
      log: h.deps.log,
      metrics: null,
      concurrency: 1,
      leaseMs: 60_000,
      newId: h.deps.newRequestId,
      runnerId: "runner-storage",
      now: Date.now,
    });
    await runner.drain();
    const { id, types } = await followed;
    expect(types.at(-1)).toBe("response.incomplete");
    const [logged] = await h.db
      .select({
        events: sql<number>`count(*)`.mapWith(Number),
        bytes: sql<number>`sum(pg_column_size(${responseEvents.event}))`.mapWith(Number),
      })
      .from(responseEvents)
      .where(eq(responseEvents.responseId, id));
    const [row] = await h.db
      .select({ eventBytes: storedResponses.eventBytes })
      .from(storedResponses)
      .where(eq(storedResponses.id, id));
    expect(logged!.events).toBe(types.length);
    expect(row!.eventBytes).toBe(logged!.bytes);
    await expectCounted();
  });

  it("refuses what would store once the org holds its limit, before running it; store: false and other orgs go on", async () => {
    const stored = await client.chat.completions.create(chat(true));
    const full = await held();
    expect(full).toBeGreaterThan(0);
    const post = poster(full);
    const rows = async () =>
      (await h.db.select().from(storedResponses)).length +
      (await h.db.select().from(storedChatCompletions)).length;
    const before = {
      rows: await rows(),
      queued: (await h.db.select().from(batchRequests)).length,
      pulled: worker.received.length,
    };

    const refusals = [
      await post("/v1/chat/completions", chat(true)),
      await post("/v1/responses", { model: BASE, input: "hi", max_output_tokens: 2 }),
      await post("/v1/responses", { model: BASE, input: "hi", background: true }),
    ];
    for (const refused of refusals) {
      expect(refused.status).toBe(400);
      expect(refused.body.error).toMatchObject({
        type: "invalid_request_error",
        code: "response_storage_limit_exceeded",
        param: "store",
      });
      expect(refused.body.error.message).toContain(`hold ${full} bytes`);
    }
    expect(await rows()).toBe(before.rows);
    expect((await h.db.select().from(batchRequests)).length).toBe(before.queued);
    expect(worker.received.length).toBe(before.pulled);

    // Nothing stored: these go on.
    expect((await post("/v1/chat/completions", chat(false))).status).toBe(200);
    expect(
      (await post("/v1/responses", { model: BASE, input: "hi", max_output_tokens: 2, store: false })).status,
    ).toBe(200);
    expect((await post("/v1/responses/input_tokens", { model: BASE, input: "hi" })).status).toBe(200);
    // Another org's room is its own.
    expect((await poster(full, h.keys.other)("/v1/chat/completions", chat(true))).status).toBe(200);
    expect(await held()).toBe(full);

    // Deleting makes room at once, though the count is cached with the caller's limits.
    expect((await post(`/v1/chat/completions/${stored.id}`, null, "DELETE")).status).toBe(200);
    expect((await post("/v1/chat/completions", chat(true))).status).toBe(200);
    await expectCounted();
    await expectCounted("other");
  });

  it("takes the org's own limit in place of the gateway's", async () => {
    const post = poster(Number.MAX_SAFE_INTEGER);
    expect((await post("/v1/chat/completions", chat(true))).status).toBe(200);
    await setStorageLimits(h.db, "acme", { responses: 0 });
    // A fresh app: its caller limits are not yet cached (other gateways see the change within 30 s).
    const refused = await poster(Number.MAX_SAFE_INTEGER)("/v1/chat/completions", chat(true));
    expect([refused.status, refused.body.error.code]).toEqual([400, "response_storage_limit_exceeded"]);
    expect(refused.body.error.message).toContain("may hold 0");
    await setStorageLimits(h.db, "acme", { responses: null });
    expect((await poster(0, h.keys.other)("/v1/chat/completions", chat(true))).status).toBe(400);
    expect((await poster(Number.MAX_SAFE_INTEGER)("/v1/chat/completions", chat(true))).status).toBe(200);
  });
});
