// How long stored Responses API responses are kept. No process owns the table, so every gateway process
// sweeps it: after storing a response, if its next sweep is due, it deletes one batch of rows older than
// the retention (by the created_at index). Due hourly; a sweep that deleted a whole batch makes the next
// one due a minute later, so a backlog (a busy table, or a retention just shortened) drains at a batch a
// minute per process while no single request waits for more than one batch. Several processes sweeping
// at once delete the same rows harmlessly. No timer: it works the same on Node and in a Workers isolate.
import type { Db } from "../db/open.ts";
import { sweepResponses } from "./response-store.ts";

export const DEFAULT_RESPONSE_RETENTION_DAYS = 30;
const SWEEP_EVERY_MS = 60 * 60_000;
const CATCH_UP_EVERY_MS = 60_000;
const SWEEP_BATCH = 5_000;

export class ResponseRetention {
  private nextSweep = Number.NEGATIVE_INFINITY;

  /** `retentionMs` 0 keeps responses until they are deleted through the API. */
  constructor(
    readonly retentionMs: number,
    private readonly now: () => number = Date.now,
    private readonly batch = SWEEP_BATCH,
  ) {}

  static days(days: number, now?: () => number): ResponseRetention {
    return new ResponseRetention(days * 24 * 60 * 60_000, now);
  }

  /** Deletes one batch of expired responses if a sweep is due; the number deleted, or null. */
  async sweepIfDue(db: Db): Promise<number | null> {
    if (this.retentionMs === 0) return null;
    const now = this.now();
    if (now < this.nextSweep) return null;
    // Set before the delete, so requests meanwhile do not start another.
    this.nextSweep = now + SWEEP_EVERY_MS;
    const deleted = await sweepResponses(db, new Date(now - this.retentionMs), this.batch);
    if (deleted === this.batch) this.nextSweep = now + CATCH_UP_EVERY_MS;
    return deleted;
  }
}
