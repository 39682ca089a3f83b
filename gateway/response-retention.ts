// How long stored Responses API responses are kept: every gateway process deletes those older than the
// retention, a batch at a time when its sweep is due (due-sweep.ts).
import type { Db } from "../db/open.ts";
import { DueSweep, SWEEP_BATCH } from "./due-sweep.ts";
import { sweepResponses } from "./response-store.ts";

export const DEFAULT_RESPONSE_RETENTION_DAYS = 30;

export class ResponseRetention {
  private readonly due: DueSweep;

  /** `retentionMs` 0 keeps responses until they are deleted through the API. */
  constructor(
    readonly retentionMs: number,
    now: () => number = Date.now,
    batch = SWEEP_BATCH,
  ) {
    this.due = new DueSweep(
      (db, at, limit) => sweepResponses(db, new Date(at - retentionMs), limit),
      now,
      batch,
    );
  }

  static days(days: number, now?: () => number): ResponseRetention {
    return new ResponseRetention(days * 24 * 60 * 60_000, now);
  }

  /** Deletes one batch of expired responses if a sweep is due; the number deleted, or null. */
  async sweepIfDue(db: Db): Promise<number | null> {
    return this.retentionMs === 0 ? null : this.due.ifDue(db);
  }
}
