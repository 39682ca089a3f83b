// An org's optional monthly token quota (orgs.monthly_token_quota), counted per UTC calendar month in
// org_token_months as tokens used (billed by the meter) plus tokens reserved (admitted, not yet metered).
//
// The gateway reserves a request's most tokens (prompt + max_tokens) at admission in one statement: an
// upsert on the org's month whose update only happens WHERE used + reserved + n <= quota, chained to the
// insert of the request's reservation row. Postgres evaluates that condition on the locked, latest version
// of the month's row, so parallel admissions cannot together overshoot the quota. The meter settles each
// request in the transaction that writes its billing row (settleQuota): it deletes the reservation and
// moves the request from reserved to its actual tokens in used. A reservation that never meets a usage
// event (dropped before a worker claimed it, a gateway that died) expires and is swept when the org next
// runs out of room; the sweep and the settlement both delete the row first, so a reservation is released
// exactly once.
import { and, eq, inArray, isNull, lt, lte, or, type SQL, sql } from "drizzle-orm";
import type { Db } from "../db/open.ts";
import { orgs, orgTokenMonths, quotaReservations } from "../schema/db.ts";

/** The month a quota counts in: "YYYY-MM", UTC. */
export function quotaMonth(ms: number): string {
  return new Date(ms).toISOString().slice(0, 7);
}

export interface QuotaStatus {
  org: string;
  month: string;
  /** Null: the org has no quota. */
  quota: number | null;
  used: number;
  reserved: number;
  /** quota − used − reserved, never below 0; null without a quota. */
  remaining: number | null;
}

export interface ReserveRequest {
  requestId: string;
  orgId: string;
  /** The most tokens the request can use: its prompt plus max_tokens. */
  tokens: number;
  now: number;
  /** How long the reservation holds without a usage event before a sweep may release it. */
  holdMs: number;
}

export class QuotaInputError extends Error {
  override readonly name = "QuotaInputError";
}

function checkTokens(field: string, value: number): void {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new QuotaInputError(`${field} must be a non-negative integer, got ${value}`);
  }
}

/**
 * Reserves the request's tokens in its org's current month. True when they fit the quota (or the org has
 * none); false, with nothing changed, when they do not.
 */
export async function reserveQuota(db: Db, request: ReserveRequest): Promise<boolean> {
  checkTokens("tokens", request.tokens);
  const month = quotaMonth(request.now);
  const quota = sql`(select ${orgs.monthlyTokenQuota} from ${orgs} where ${orgs.id} = ${request.orgId})`;
  const m = orgTokenMonths;
  const held = db.$with("held").as(
    db
      .insert(m)
      .select(
        db
          .select({
            orgId: orgs.id,
            month: sql`${month}`.as("month"),
            usedTokens: sql`0`.as("used_tokens"),
            reservedTokens: sql`${request.tokens}::bigint`.as("reserved_tokens"),
          })
          .from(orgs)
          .where(
            and(
              eq(orgs.id, request.orgId),
              or(isNull(orgs.monthlyTokenQuota), lte(sql`${request.tokens}::bigint`, orgs.monthlyTokenQuota)),
            ),
          ),
      )
      .onConflictDoUpdate({
        target: [m.orgId, m.month],
        set: { reservedTokens: sql`${m.reservedTokens} + excluded.reserved_tokens` },
        setWhere: sql`${quota} is null or ${m.usedTokens} + ${m.reservedTokens} + excluded.reserved_tokens <= ${quota}`,
      })
      .returning({ orgId: m.orgId }),
  );
  const recorded = await db
    .with(held)
    .insert(quotaReservations)
    .select(
      db
        .select({
          requestId: sql`${request.requestId}`.as("request_id"),
          orgId: held.orgId,
          month: sql`${month}`.as("month"),
          tokens: sql`${request.tokens}::bigint`.as("tokens"),
          expiresAt: sql`${new Date(request.now + request.holdMs).toISOString()}::timestamptz`.as(
            "expires_at",
          ),
        })
        .from(held),
    )
    .returning({ requestId: quotaReservations.requestId });
  return recorded.length === 1;
}

/** Deletes the reservations `where` selects and gives their tokens back to their months; how many went. */
async function release(db: Db, where: SQL | undefined): Promise<number> {
  const gone = db.$with("gone").as(
    db.delete(quotaReservations).where(where).returning({
      orgId: quotaReservations.orgId,
      month: quotaReservations.month,
      tokens: quotaReservations.tokens,
    }),
  );
  const sums = db.$with("sums").as(
    db
      .select({
        orgId: gone.orgId,
        month: gone.month,
        tokens: sql`sum(${gone.tokens})`.as("tokens"),
        reservations: sql`count(*)`.as("reservations"),
      })
      .from(gone)
      .groupBy(gone.orgId, gone.month),
  );
  const updated = await db
    .with(gone, sums)
    .update(orgTokenMonths)
    .set({ reservedTokens: sql`greatest(${orgTokenMonths.reservedTokens} - ${sums.tokens}, 0)` })
    .from(sums)
    .where(and(eq(orgTokenMonths.orgId, sums.orgId), eq(orgTokenMonths.month, sums.month)))
    .returning({ reservations: sql`${sums.reservations}`.mapWith(Number) });
  return updated.reduce((total, row) => total + row.reservations, 0);
}

/** Gives a request's reservation back at once: it was refused or failed before reaching a worker. */
export async function releaseReservation(db: Db, requestId: string): Promise<boolean> {
  return (await release(db, eq(quotaReservations.requestId, requestId))) === 1;
}

/** Releases the org's reservations whose hold has passed; how many. */
export async function sweepExpiredReservations(db: Db, orgId: string, now: number): Promise<number> {
  return release(db, and(eq(quotaReservations.orgId, orgId), lt(quotaReservations.expiresAt, new Date(now))));
}

/** A billed request, as the meter settles it against the quota. */
export interface SettledUsage {
  requestId: string;
  orgId: string;
  /** Input plus output tokens; negative to take back tokens counted before (a waived attempt's). */
  tokens: number;
  /** Counts in this month when the request held no reservation. */
  startedAt: Date;
}

/** A transaction of the database: quota changes ride in the transaction of the rows they account for. */
export type Tx = Parameters<Parameters<Db["transaction"]>[0]>[0];

/**
 * Moves newly billed requests from reserved to used, in the meter's transaction (so exactly once per
 * billing row): their reservations are deleted and given back, their actual tokens added to the month the
 * reservation was in (or the month they started, without one). Every org's months are counted, quota or
 * not, so a quota set mid-month starts from the right number.
 */
export async function settleQuota(tx: Tx, settled: readonly SettledUsage[]): Promise<void> {
  if (settled.length === 0) return;
  const released = await tx
    .delete(quotaReservations)
    .where(
      inArray(
        quotaReservations.requestId,
        settled.map((s) => s.requestId),
      ),
    )
    .returning({
      requestId: quotaReservations.requestId,
      month: quotaReservations.month,
      tokens: quotaReservations.tokens,
    });
  const reservations = new Map(released.map((r) => [r.requestId, r]));
  const months = new Map<string, { orgId: string; month: string; used: number; released: number }>();
  for (const usage of settled) {
    const reservation = reservations.get(usage.requestId);
    const month = reservation?.month ?? quotaMonth(usage.startedAt.getTime());
    const key = `${usage.orgId}\u0000${month}`;
    const entry = months.get(key) ?? { orgId: usage.orgId, month, used: 0, released: 0 };
    entry.used += usage.tokens;
    entry.released += reservation?.tokens ?? 0;
    months.set(key, entry);
  }
  // One order for every meter, so two transactions never wait on each other's month rows in a cycle.
  const rows = [...months.values()].sort((a, b) =>
    a.orgId === b.orgId ? a.month.localeCompare(b.month) : a.orgId.localeCompare(b.orgId),
  );
  await tx
    .insert(orgTokenMonths)
    .values(
      // reserved_tokens carries minus what was released: a month with a reservation already has its row,
      // so the negative value is only ever applied by the update below.
      rows.map((r) => ({ orgId: r.orgId, month: r.month, usedTokens: r.used, reservedTokens: -r.released })),
    )
    .onConflictDoUpdate({
      target: [orgTokenMonths.orgId, orgTokenMonths.month],
      set: {
        usedTokens: sql`${orgTokenMonths.usedTokens} + excluded.used_tokens`,
        reservedTokens: sql`greatest(${orgTokenMonths.reservedTokens} + excluded.reserved_tokens, 0)`,
      },
    });
}

/** Sets (or with null removes) the org's monthly token quota; false when the org does not exist. */
export async function setMonthlyTokenQuota(db: Db, orgId: string, quota: number | null): Promise<boolean> {
  if (quota !== null) checkTokens("the monthly token quota", quota);
  const updated = await db
    .update(orgs)
    .set({ monthlyTokenQuota: quota })
    .where(eq(orgs.id, orgId))
    .returning({ id: orgs.id });
  return updated.length === 1;
}

/** The org's quota and its month's counts; null when the org does not exist. */
export async function quotaStatus(db: Db, orgId: string, now: number): Promise<QuotaStatus | null> {
  const month = quotaMonth(now);
  const [row] = await db
    .select({
      quota: orgs.monthlyTokenQuota,
      used: sql`coalesce(${orgTokenMonths.usedTokens}, 0)`.mapWith(Number),
      reserved: sql`coalesce(${orgTokenMonths.reservedTokens}, 0)`.mapWith(Number),
    })
    .from(orgs)
    .leftJoin(orgTokenMonths, and(eq(orgTokenMonths.orgId, orgs.id), eq(orgTokenMonths.month, month)))
    .where(eq(orgs.id, orgId));
  if (!row) return null;
  return {
    org: orgId,
    month,
    quota: row.quota,
    used: row.used,
    reserved: row.reserved,
    remaining: row.quota === null ? null : Math.max(0, row.quota - row.used - row.reserved),
  };
}
