// How long stored Responses API responses are kept. No process owns the table, so every gateway process
// sweeps it: after storing a response, if it has not swept within the hour, it deletes rows older than the
// retention (in batches, by the created_at index). Several processes sweeping at once delete the same rows
// harmlessly. This needs no timer, so it works the same on Node and in a Workers isolate.
import type { Db } from "../db/open.ts";
import { sweepResponses } from "./response-store.ts";

export const DEFAULT_RESPONSE_RETENTION_DAYS = 30;
const SWEEP_EVERY_MS = 60 * 60_000;
/** Rows one sweep deletes at most; the next sweep takes the rest. */
const SWEEP_BATCH = 10_000;

export class ResponseRetention {
  private lastSweep = Number.NEGATIVE_INFINITY;

  /** `retentionMs` 0 keeps responses until they are deleted through the API. */
  constructor(
    readonly retentionMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  static days(days: number, now?: () => number): ResponseRetention {
    return new ResponseRetention(days * 24 * 60 * 60_000, now);
  }

  /** Deletes expired responses if this process has not in the last hour; the number deleted, or null. */
  async sweepIfDue(db: Db): Promise<number | null> {
    if (this.retentionMs === 0) return null;
    const now = this.now();
    if (now - this.lastSweep < SWEEP_EVERY_MS) return null;
    this.lastSweep = now;
    return sweepResponses(db, new Date(now - this.retentionMs), SWEEP_BATCH);
  }
}
