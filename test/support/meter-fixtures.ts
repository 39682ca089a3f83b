// What the meter's tests share: a namespace per test, the depth of a namespace's usage stream (a work
// queue: an acked event leaves it, so 0 means every event was billed or dropped as a duplicate), a priced
// base model, and the billing rows of one org.
import { randomUUID } from "node:crypto";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { eq, sql } from "drizzle-orm";
import type { Db } from "../../db/open.ts";
import { baseModels, usageEvents } from "../../schema/db.ts";
import type { UsageEvent } from "../../schema/wire.ts";

export function uniqueNamespace(): string {
  return `m${randomUUID().replaceAll("-", "").slice(0, 12)}`;
}

/** Events still in the namespace's usage stream: queued, or delivered and not yet acked. */
export async function usageBacklog(servers: string, namespace: string): Promise<number> {
  const nc = await connect({ servers });
  try {
    const jsm = await jetstreamManager(nc);
    return (await jsm.streams.info(`${namespace}_USAGE`)).state.messages;
  } finally {
    await nc.close();
  }
}

/** Events the meter has taken and not yet acked. */
export async function meterAckPending(servers: string, namespace: string): Promise<number> {
  const nc = await connect({ servers });
  try {
    const jsm = await jetstreamManager(nc);
    return (await jsm.consumers.info(`${namespace}_USAGE`, "meter")).num_ack_pending;
  } finally {
    await nc.close();
  }
}

export async function registerBase(
  db: Db,
  name: string,
  input: number,
  output: number,
  cachedInput: number | null = null,
): Promise<void> {
  await db.insert(baseModels).values({
    name,
    architecture: {
      family: "LlamaForCausalLM",
      layers: 2,
      hiddenSize: 64,
      intermediateSize: 128,
      attentionHeads: 4,
      kvHeads: 2,
      headDim: 16,
      vocabSize: 512,
    },
    contextLength: 2048,
    inputPriceMicrosPerMillion: input,
    outputPriceMicrosPerMillion: output,
    cachedInputPriceMicrosPerMillion: cachedInput,
  });
}

export function usageEvent(overrides: Partial<UsageEvent> & Pick<UsageEvent, "org" | "base">): UsageEvent {
  return {
    v: 1,
    request_id: `req-${randomUUID()}`,
    api_key_id: "key-1",
    adapter: "support-v1",
    input_tokens: 100,
    output_tokens: 20,
    finish_reason: "stop",
    started_ms: Date.UTC(2025, 2, 1, 10),
    finished_ms: Date.UTC(2025, 2, 1, 10, 0, 2),
    ...overrides,
  };
}

export async function orgRows(db: Db, org: string) {
  return db.select().from(usageEvents).where(eq(usageEvents.orgId, org)).orderBy(usageEvents.requestId);
}

export async function orgTotals(db: Db, org: string) {
  const [totals] = await db
    .select({
      rows: sql<number>`count(*)::int`,
      distinctRequests: sql<number>`count(distinct ${usageEvents.requestId})::int`,
      inputTokens: sql<number>`coalesce(sum(${usageEvents.inputTokens}), 0)::int`,
      outputTokens: sql<number>`coalesce(sum(${usageEvents.outputTokens}), 0)::int`,
      costMicros: sql<number>`coalesce(sum(${usageEvents.costMicros}), 0)::bigint`.mapWith(Number),
    })
    .from(usageEvents)
    .where(eq(usageEvents.orgId, org));
  return totals!;
}
