// Writes one batch of usage events as billing rows: in one transaction it reads the prices of the bases
// the batch names, prices each event once (meter/prices.ts) and inserts the rows keyed by request id with
// ON CONFLICT DO NOTHING, so an event delivered again — after a lost ack, a killed meter, a replay past
// JetStream's dedupe window — never makes a second row.
//
// An event the meter cannot price correctly is held, not written: its base has no row in base_models, or a
// count does not fit the table's columns. Billing it at 0 would lose the money for good; held, it stays in
// JetStream (the meter naks it and it comes back) and is billed at the right price once an operator has
// registered the base. Held events are reported with their request id so the log says what waits.
//
// In the same transaction each new row settles its request against the org's monthly token quota
// (meter/token-quota.ts): its reservation is released and its actual tokens counted, once.
import { inArray } from "drizzle-orm";
import type { Db } from "../db/open.ts";
import { baseModels, type NewUsageEvent, usageEvents } from "../schema/db.ts";
import type { UsageEvent } from "../schema/wire.ts";
import { costMicros, FULL_PRICE_PERCENT, type Prices } from "./prices.ts";
import { settleQuota } from "./token-quota.ts";

/** Why an event was not written; it stays queued and is tried again. */
export class UsageHeldError extends Error {
  override readonly name = "UsageHeldError";
  constructor(
    readonly requestId: string,
    reason: string,
  ) {
    super(`usage event ${requestId} is held, not billed: ${reason}`);
  }
}

export interface BatchOutcome {
  /** Rows this batch added. */
  inserted: number;
  /** Events whose request id already had a row (or appeared twice in the batch): acked, not written. */
  duplicates: number;
  /** Events not written, by request id; every other event of the batch is committed. */
  held: Map<string, UsageHeldError>;
}

/** The largest value of a Postgres integer column (input_tokens, output_tokens). */
const INT4_MAX = 2_147_483_647;

function oversizedCount(event: UsageEvent): string | undefined {
  for (const field of ["input_tokens", "output_tokens"] as const) {
    if (event[field] > INT4_MAX) return `${field} ${event[field]} exceeds the column's limit ${INT4_MAX}`;
  }
  return undefined;
}

function row(
  event: UsageEvent,
  prices: Prices & { batchPricePercent: number; priorityPricePercent: number },
): NewUsageEvent {
  return {
    requestId: event.request_id,
    orgId: event.org,
    apiKeyId: event.api_key_id,
    base: event.base,
    adapter: event.adapter,
    inputTokens: event.input_tokens,
    cachedInputTokens: event.cached_input_tokens ?? 0,
    outputTokens: event.output_tokens,
    costMicros: costMicros(
      prices,
      {
        inputTokens: event.input_tokens,
        cachedInputTokens: event.cached_input_tokens ?? 0,
        outputTokens: event.output_tokens,
      },
      event.batch
        ? prices.batchPricePercent
        : event.priority
          ? prices.priorityPricePercent
          : FULL_PRICE_PERCENT,
    ),
    batch: event.batch === true,
    priority: event.priority === true,
    finishReason: event.finish_reason,
    startedAt: new Date(event.started_ms),
    finishedAt: new Date(event.finished_ms),
  };
}

/**
 * Prices and inserts a batch in one transaction. Throws (nothing committed) when the database fails; the
 * caller then retries every event of the batch.
 */
export async function writeUsageBatch(db: Db, events: readonly UsageEvent[]): Promise<BatchOutcome> {
  const unique = new Map(events.map((event) => [event.request_id, event]));
  const bases = [...new Set(events.map((event) => event.base))];
  return db.transaction(async (tx) => {
    const priced = await tx
      .select({
        name: baseModels.name,
        inputPriceMicrosPerMillion: baseModels.inputPriceMicrosPerMillion,
        outputPriceMicrosPerMillion: baseModels.outputPriceMicrosPerMillion,
        cachedInputPriceMicrosPerMillion: baseModels.cachedInputPriceMicrosPerMillion,
        batchPricePercent: baseModels.batchPricePercent,
        priorityPricePercent: baseModels.priorityPricePercent,
      })
      .from(baseModels)
      .where(inArray(baseModels.name, bases));
    const prices = new Map(priced.map(({ name, ...price }) => [name, price]));
    const held = new Map<string, UsageHeldError>();
    const rows: NewUsageEvent[] = [];
    const hold = (event: UsageEvent, reason: string) =>
      held.set(event.request_id, new UsageHeldError(event.request_id, reason));
    for (const event of unique.values()) {
      const price = prices.get(event.base);
      if (!price) {
        hold(event, `base "${event.base}" has no row in base_models, so it has no prices`);
        continue;
      }
      const oversized = oversizedCount(event);
      if (oversized) {
        hold(event, oversized);
        continue;
      }
      rows.push(row(event, price));
    }
    const inserted =
      rows.length === 0
        ? []
        : await tx
            .insert(usageEvents)
            .values(rows)
            .onConflictDoNothing({ target: usageEvents.requestId })
            .returning({
              requestId: usageEvents.requestId,
              orgId: usageEvents.orgId,
              inputTokens: usageEvents.inputTokens,
              outputTokens: usageEvents.outputTokens,
              startedAt: usageEvents.startedAt,
            });
    // Only rows this batch added: a duplicate event was settled when its first copy was written.
    await settleQuota(
      tx,
      inserted.map((r) => ({
        requestId: r.requestId,
        orgId: r.orgId,
        tokens: r.inputTokens + r.outputTokens,
        startedAt: r.startedAt,
      })),
    );
    return { inserted: inserted.length, duplicates: events.length - held.size - inserted.length, held };
  });
}
