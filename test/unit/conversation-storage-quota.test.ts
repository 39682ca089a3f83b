// An org's conversations together may hold at most the gateway's maxOrgConversationBytes (their metadata
// and items as JSON). What the org's row counts equals, after every kind of write (create, add, a
// response's turn, metadata, deleting an item, deleting a conversation), what its conversations hold when
// recounted from the rows; a create, an add or a response that would pass the limit is refused with 400
// conversation_storage_limit_exceeded and changes nothing (the response never runs); another org's room is
// its own; a delete frees the room at once; of two adds at once only the one that fits is taken; and an
// org's own limit replaces the gateway's.
import { eq, inArray } from "drizzle-orm";
import type OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { conversationBytesHeld, jsonBytes } from "../../gateway/conversation-storage-quota.ts";
import { setStorageLimits } from "../../gateway/orgs.ts";
import { conversationItems, conversations } from "../../schema/db.ts";
import type { FakeWorker } from "../support/fake-worker.ts";
import { BASE, type GatewayHarness } from "../support/gateway-harness.ts";
import { jsonCaller } from "../support/json-caller.ts";
import { type ServedGateway, serveGateway } from "../support/served-gateway.ts";

let h: GatewayHarness;
let worker: FakeWorker;
let gateway: ServedGateway;
let client: OpenAI;

beforeAll(async () => {
  gateway = await serveGateway();
  ({ h, worker, client } = gateway);
});
afterAll(() => gateway.close());

/** What the org's conversations hold, recounted from their rows. */
async function recount(org: string): Promise<number> {
  const rows = await h.db.select().from(conversations).where(eq(conversations.orgId, org));
  if (rows.length === 0) return 0;
  const items = await h.db
    .select({ item: conversationItems.item })
    .from(conversationItems)
    .where(
      inArray(
        conversationItems.conversationId,
        rows.map((r) => r.id),
      ),
    );
  return (
    rows.reduce((sum, row) => sum + jsonBytes(row.metadata), 0) +
    items.reduce((sum, row) => sum + jsonBytes(row.item), 0)
  );
}

async function expectCounted(org = "acme"): Promise<void> {
  expect(await conversationBytesHeld(h.db, org)).toBe(await recount(org));
}

/** POSTs JSON as acme (or `key`) to an app whose orgs' conversations may hold `maxOrgConversationBytes`. */
function poster(maxOrgConversationBytes: number, key = h.keys.acme) {
  return jsonCaller(h.appWith({ limits: { maxOrgConversationBytes } }), key);
}

const userItem = (text: string) => ({ type: "message", role: "user", content: text });

describe("an org's conversation storage", () => {
  it("counts exactly what its conversations hold through every kind of write", async () => {
    const { id } = await client.conversations.create({
      metadata: { customer: "acme-7", tier: "gold" },
      items: [
        { type: "message", role: "system", content: "Be brief." },
        { type: "message", role: "user", content: "Grüße, ☃ and 𝄞" },
      ],
    });
    await expectCounted();
    expect(await conversationBytesHeld(h.db, "acme")).toBeGreaterThan(0);
    const added = await client.conversations.items.create(id, {
      items: [{ type: "message", role: "user", content: "more" }],
    });
    await expectCounted();
    await client.responses.create({ model: BASE, conversation: id, input: "a turn", max_output_tokens: 2 });
    await expectCounted();
    await client.conversations.update(id, { metadata: { customer: "acme-7, renamed and longer" } });
    await expectCounted();
    await client.conversations.items.delete(added.data[0]!.id!, { conversation_id: id });
    await expectCounted();
    const held = await conversationBytesHeld(h.db, "acme");
    await client.conversations.delete(id);
    await expectCounted();
    expect(await conversationBytesHeld(h.db, "acme")).toBeLessThan(held);
  });

  it("refuses a create, an add or a response past the limit, changing nothing, and frees room on delete", async () => {
    const big = userItem("x".repeat(4000));
    const kept = await client.conversations.create({
      items: [big] as OpenAI.Conversations.ConversationCreateParams["items"],
    });
    const held = await conversationBytesHeld(h.db, "acme");
    // Room for about one more big item.
    const post = poster(held + 5000);
    const into = await post("/v1/conversations", {});
    expect(into.status).toBe(200);
    expect((await post(`/v1/conversations/${into.body.id}/items`, { items: [big] })).status).toBe(200);
    const full = await conversationBytesHeld(h.db, "acme");
    const count = (await h.db.select().from(conversations)).length;

    const create = await post("/v1/conversations", { items: [big] });
    expect(create.status).toBe(400);
    expect(create.body.error).toMatchObject({
      type: "invalid_request_error",
      code: "conversation_storage_limit_exceeded",
      param: "items",
    });
    expect(create.body.error.message).toContain(`hold ${full} bytes`);
    expect((await h.db.select().from(conversations)).length).toBe(count);

    const add = await post(`/v1/conversations/${into.body.id}/items`, { items: [big] });
    expect([add.status, add.body.error.code, add.body.error.param]).toEqual([
      400,
      "conversation_storage_limit_exceeded",
      "items",
    ]);
    const runs = worker.received.length;
    const answered = await post("/v1/responses", {
      model: BASE,
      conversation: into.body.id,
      input: "y".repeat(4000),
      max_output_tokens: 1,
    });
    expect([answered.status, answered.body.error.code, answered.body.error.param]).toEqual([
      400,
      "conversation_storage_limit_exceeded",
      "input",
    ]);
    expect(worker.received.length).toBe(runs);
    // Counting its tokens stores nothing: it goes on to admission (which finds it past the tiny model's
    // context, as the conversation already is).
    const counted = await post("/v1/responses/input_tokens", {
      model: BASE,
      conversation: into.body.id,
      input: "y".repeat(4000),
    });
    expect(counted.body.error.code).toBe("context_length_exceeded");
    expect(await conversationBytesHeld(h.db, "acme")).toBe(full);
    await expectCounted();

    // Another org's conversations are counted apart.
    const other = poster(held + 5000, h.keys.other);
    expect((await other("/v1/conversations", { items: [big] })).status).toBe(200);
    await expectCounted("other");

    await client.conversations.delete(kept.id);
    expect((await post(`/v1/conversations/${into.body.id}/items`, { items: [big] })).status).toBe(200);
    await expectCounted();
  });

  it("takes only the add that fits when two come at once", async () => {
    const { id } = await client.conversations.create({});
    const item = userItem("z".repeat(3000));
    const post = poster((await conversationBytesHeld(h.db, "acme")) + 4000);
    const statuses = await Promise.all([
      post(`/v1/conversations/${id}/items`, { items: [item] }),
      post(`/v1/conversations/${id}/items`, { items: [item] }),
    ]);
    expect(statuses.map((s) => s.status).sort()).toEqual([200, 400]);
    const items = await h.db.select().from(conversationItems).where(eq(conversationItems.conversationId, id));
    expect(items).toHaveLength(1);
    await expectCounted();
  });

  it("takes the org's own limit, set by the operator, over the gateway's", async () => {
    const { id } = await client.conversations.create({});
    const item = userItem("w".repeat(3000));
    const post = poster(Number.MAX_SAFE_INTEGER);
    await setStorageLimits(h.db, "acme", {
      conversations: (await conversationBytesHeld(h.db, "acme")) + 1000,
    });
    try {
      const refused = await post(`/v1/conversations/${id}/items`, { items: [item] });
      expect([refused.status, refused.body.error.code]).toEqual([400, "conversation_storage_limit_exceeded"]);
    } finally {
      await setStorageLimits(h.db, "acme", { conversations: null });
    }
    expect((await post(`/v1/conversations/${id}/items`, { items: [item] })).status).toBe(200);
  });

  it("adds after items an older gateway added during a rolling upgrade, which did not move next_position", async () => {
    const { id } = await client.conversations.create({ items: [userItem("first")] as never });
    // As a gateway from before migration 0024 adds an item: at max(position) + 1, counting nothing.
    await h.db.insert(conversationItems).values({
      conversationId: id,
      position: 1,
      id: "msg_from_old_gateway",
      item: { ...userItem("from an older gateway"), id: "msg_from_old_gateway" },
    });
    await client.conversations.items.create(id, { items: [userItem("after it") as never] });
    const rows = await h.db
      .select({ position: conversationItems.position, id: conversationItems.id })
      .from(conversationItems)
      .where(eq(conversationItems.conversationId, id));
    expect(rows.map((r) => r.position).sort()).toEqual([0, 1, 2]);
    expect(rows.find((r) => r.position === 1)!.id).toBe("msg_from_old_gateway");
  });
});
