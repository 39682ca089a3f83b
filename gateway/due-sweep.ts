// Deleting what has expired from a table no process owns (stored responses, files, idempotency keys): every
// gateway process sweeps it, lazily — after the API writes to it, when its next sweep is due, it deletes one
// batch of expired rows. Due hourly; a sweep that deleted a whole batch makes the next one due a minute
// later, so a backlog drains at a batch a minute per process while no single request waits for more than
// one batch. Several processes sweeping at once delete the same rows harmlessly. No timer: it works the
// same on Node and in a Workers isolate.
import { inArray, lte } from "drizzle-orm";
import type { AnyPgColumn, PgTable } from "drizzle-orm/pg-core";
import type { Db } from "../db/open.ts";
import type { GatewayLog } from "./deps.ts";

const SWEEP_EVERY_MS = 60 * 60_000;
const CATCH_UP_EVERY_MS = 60_000;
export const SWEEP_BATCH = 5_000;

/** Deletes up to `limit` rows expired at `now` (ms); returns how many. */
export type Sweep = (db: Db, now: number, limit: number) => Promise<number>;

/** A Sweep for a table whose rows expire at a timestamp column: up to `limit` rows past it go. */
export function expiredRows(table: PgTable, id: AnyPgColumn, expiresAt: AnyPgColumn): Sweep {
  return async (db, now, limit) => {
    const expired = db
      .select({ id })
      .from(table)
      .where(lte(expiresAt, new Date(now)))
      .limit(limit);
    const deleted = await db.delete(table).where(inArray(id, expired)).returning({ id });
    return deleted.length;
  };
}

export class DueSweep {
  private nextSweep = Number.NEGATIVE_INFINITY;

  constructor(
    private readonly sweep: Sweep,
    private readonly now: () => number = Date.now,
    private readonly batch = SWEEP_BATCH,
  ) {}

  /** Deletes one batch of expired rows if a sweep is due; the number deleted, or null. */
  async ifDue(db: Db): Promise<number | null> {
    const now = this.now();
    if (now < this.nextSweep) return null;
    // Set before the delete, so requests meanwhile do not start another.
    this.nextSweep = now + SWEEP_EVERY_MS;
    const deleted = await this.sweep(db, now, this.batch);
    if (deleted === this.batch) this.nextSweep = now + CATCH_UP_EVERY_MS;
    return deleted;
  }

  /**
   * ifDue after a request wrote to the table: a failure is logged ("could not sweep <rows>"), not thrown,
   * since the request stands; a deletion is logged as "deleted <expired>" with the count. `fields` go into
   * both log lines (the request's id, say).
   */
  async afterWrite(
    db: Db,
    log: GatewayLog,
    names: { rows: string; expired: string },
    fields: object = {},
  ): Promise<void> {
    const deleted = await this.ifDue(db).catch((error: unknown) => {
      log.error(
        { ...fields, err: error instanceof Error ? error.message : String(error) },
        `could not sweep ${names.rows}`,
      );
      return null;
    });
    if (deleted) log.info({ ...fields, deleted }, `deleted ${names.expired}`);
  }
}
