// The idempotency_keys table (schema/db.ts): a key is claimed by one request at a time, holds that
// request's answer once it succeeded, and is forgotten after a day. A claim is a lease: a gateway that dies
// mid-request leaves a running claim that another may take once it runs out. Functions of the request's
// database handle, as the Workers entry opens one per request.
import { and, eq, lte } from "drizzle-orm";
import type { Db } from "../db/open.ts";
import { idempotencyKeys } from "../schema/db.ts";
import { expiredRows } from "./due-sweep.ts";

/** How long a stored answer is replayed. */
export const IDEMPOTENCY_TTL_MS = 24 * 60 * 60_000;

export interface StoredAnswer {
  status: number;
  body: string;
  contentType: string;
}

export type IdempotencyEntry =
  | { state: "running"; bodyHash: string }
  | { state: "done"; bodyHash: string; answer: StoredAnswer };

/**
 * Claims the key for a new run until `leaseUntil`; returns null when claimed, else the entry that holds
 * it (a run in flight, or an answer to replay). A missing, expired or abandoned entry is claimed.
 */
export async function claimKey(
  db: Db,
  key: string,
  bodyHash: string,
  now: Date,
  leaseUntil: Date,
): Promise<IdempotencyEntry | null> {
  // The insert and the read after it race with other claims and releases: look again until one settles.
  for (;;) {
    const claimed = await db
      .insert(idempotencyKeys)
      .values({ key, bodyHash, state: "running", expiresAt: leaseUntil })
      .onConflictDoUpdate({
        target: idempotencyKeys.key,
        set: {
          bodyHash,
          state: "running",
          status: null,
          body: null,
          contentType: null,
          expiresAt: leaseUntil,
        },
        setWhere: lte(idempotencyKeys.expiresAt, now),
      })
      .returning({ key: idempotencyKeys.key });
    if (claimed.length > 0) return null;
    const [row] = await db.select().from(idempotencyKeys).where(eq(idempotencyKeys.key, key));
    if (!row) continue;
    if (row.state === "running") return { state: "running", bodyHash: row.bodyHash };
    return {
      state: "done",
      bodyHash: row.bodyHash,
      answer: { status: row.status!, body: row.body!, contentType: row.contentType! },
    };
  }
}

/** Stores the claimed run's answer, replayed until `until`. */
export async function completeKey(db: Db, key: string, answer: StoredAnswer, until: Date): Promise<void> {
  await db
    .update(idempotencyKeys)
    .set({ state: "done", ...answer, expiresAt: until })
    .where(and(eq(idempotencyKeys.key, key), eq(idempotencyKeys.state, "running")));
}

/** Lets a claim go whose run failed, so a retry runs again. */
export async function releaseKey(db: Db, key: string): Promise<void> {
  await db
    .delete(idempotencyKeys)
    .where(and(eq(idempotencyKeys.key, key), eq(idempotencyKeys.state, "running")));
}

/** Deletes up to `limit` keys expired at `now` (ms); returns how many. */
export const sweepIdempotencyKeys = expiredRows(
  idempotencyKeys,
  idempotencyKeys.key,
  idempotencyKeys.expiresAt,
);
