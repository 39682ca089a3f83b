// Waiving an attempt's usage. The batch runner runs a line (or a background response) again when its
// attempt failed or was cut short by something of ours (a worker lost, NATS restarting, a gateway stopped
// or dead); each attempt goes under its own request id, and its worker bills what it generated. The
// customer gets one answer, so only the attempt that answered may be billed: the runner waives each attempt
// it runs again, in the transaction that puts the line back.
//
// The attempt's usage event may already be billed, or still to come (a worker cut off NATS finishes the run
// and bills it minutes later). Both meet at the row's primary key: an upsert marks the meter's row waived
// at cost 0 and takes its tokens back out of the org's monthly quota, or writes a waived row of 0 tokens
// first, which the meter's later insert (ON CONFLICT DO NOTHING) leaves alone. Either way the attempt's
// quota reservation is released here.
import { sql } from "drizzle-orm";
import { usageEvents } from "../schema/db.ts";
import { settleQuota, type Tx } from "./token-quota.ts";

export interface WaivedAttempt {
  requestId: string;
  orgId: string;
  apiKeyId: string;
  base: string;
  /** A Batch API line (false: a background response). */
  batch: boolean;
  at: Date;
}

/** The finish_reason of a waived row written before its attempt's usage event. */
const WAIVED_FINISH_REASON = "waived";

export async function waiveUsage(tx: Tx, attempt: WaivedAttempt): Promise<void> {
  const [row] = await tx
    .insert(usageEvents)
    .values({
      requestId: attempt.requestId,
      orgId: attempt.orgId,
      apiKeyId: attempt.apiKeyId,
      base: attempt.base,
      adapter: null,
      inputTokens: 0,
      cachedInputTokens: 0,
      outputTokens: 0,
      costMicros: 0,
      batch: attempt.batch,
      finishReason: WAIVED_FINISH_REASON,
      startedAt: attempt.at,
      finishedAt: attempt.at,
      waived: true,
    })
    .onConflictDoUpdate({
      target: usageEvents.requestId,
      set: { waived: true, costMicros: 0 },
      // Waived once: a second waiver of the same attempt takes nothing back again.
      setWhere: sql`${usageEvents.waived} = false`,
    })
    .returning({
      orgId: usageEvents.orgId,
      tokens: sql<number>`${usageEvents.inputTokens} + ${usageEvents.outputTokens}`.mapWith(Number),
      startedAt: usageEvents.startedAt,
    });
  if (!row) return;
  // A billed row's tokens leave the month's used tokens; a new row's are 0. Either way the attempt's
  // reservation, if any is left, is released.
  await settleQuota(tx, [
    { requestId: attempt.requestId, orgId: row.orgId, tokens: -row.tokens, startedAt: row.startedAt },
  ]);
}
