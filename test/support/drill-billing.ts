// What every drill asserts about billing once the dust settles: the usage_events rows of the drill's org
// are exactly one per request id, only for requests the clients sent, and a completed request is billed
// exactly the usage its client was told. A failed request has at most one row, of at most max_tokens
// output tokens; a stream that delivered tokens before it failed has one.
import { eq, sql } from "drizzle-orm";
import { expect, vi } from "vitest";
import type { Db } from "../../db/open.ts";
import { usageEvents } from "../../schema/db.ts";
import type { ChatOutcome } from "./drill-client.ts";

interface BilledRequest {
  requestId: string;
  rows: number;
  inputTokens: number;
  outputTokens: number;
}

/** Billing rows of `org` by request id, once the row of every request that must have one arrived. */
async function settledBilling(db: Db, org: string, outcomes: readonly ChatOutcome[]) {
  const rowsOf = async (): Promise<Map<string, BilledRequest>> => {
    const grouped = await db
      .select({
        requestId: usageEvents.requestId,
        rows: sql<number>`count(*)::int`,
        inputTokens: sql<number>`sum(${usageEvents.inputTokens})::int`,
        outputTokens: sql<number>`sum(${usageEvents.outputTokens})::int`,
      })
      .from(usageEvents)
      .where(eq(usageEvents.orgId, org))
      .groupBy(usageEvents.requestId);
    return new Map(grouped.map((row) => [row.requestId, row]));
  };
  const completed = outcomes.filter((o) => o.usage);
  const streamedThenFailed = outcomes.filter((o) => o.error && o.contentChunks > 0);
  let rows = new Map<string, BilledRequest>();
  await vi.waitFor(
    async () => {
      rows = await rowsOf();
      for (const o of [...completed, ...streamedThenFailed]) expect(rows.has(o.requestId)).toBe(true);
    },
    { timeout: 30_000, interval: 200 },
  );
  return rows;
}

/** Asserts the billing rule above for `outcomes`, the drill's every request. */
export async function expectBilledAsTold(db: Db, org: string, outcomes: readonly ChatOutcome[]) {
  const rows = await settledBilling(db, org, outcomes);
  const sent = new Set(outcomes.map((o) => o.requestId));
  expect(sent.size).toBe(outcomes.length);
  for (const [requestId, row] of rows) {
    expect(sent.has(requestId), `a row for ${requestId}, which no client sent`).toBe(true);
    expect(row.rows, `rows of ${requestId}`).toBe(1);
  }
  for (const outcome of outcomes) {
    const row = rows.get(outcome.requestId);
    if (outcome.usage) {
      expect(row, `the row of completed ${outcome.requestId}`).toMatchObject({
        inputTokens: outcome.usage.prompt_tokens,
        outputTokens: outcome.usage.completion_tokens,
      });
    } else if (outcome.contentChunks > 0) {
      expect(row!.outputTokens, `billed tokens of ${outcome.requestId}`).toBeGreaterThanOrEqual(1);
      expect(row!.outputTokens).toBeLessThanOrEqual(outcome.maxTokens);
    } else if (row) {
      expect(row.outputTokens, `billed tokens of ${outcome.requestId}`).toBeLessThanOrEqual(
        outcome.maxTokens,
      );
    }
  }
}
