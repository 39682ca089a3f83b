// How long stored Responses API responses and stored chat completions are kept: every gateway process
// deletes those older than the retention, a batch at a time when its sweep of that table is due
// (due-sweep.ts).
import type { Db } from "../db/open.ts";
import { sweepChatCompletions } from "./chat-completion-store.ts";
import { DueSweep, SWEEP_BATCH } from "./due-sweep.ts";
import { sweepResponses } from "./response-store.ts";

export const DEFAULT_RETENTION_DAYS = 30;

export class StoredRetention {
  private readonly responses: DueSweep;
  private readonly chatCompletions: DueSweep;

  /** `retentionMs` 0 keeps what is stored until it is deleted through the API. */
  constructor(
    readonly retentionMs: number,
    now: () => number = Date.now,
    batch = SWEEP_BATCH,
  ) {
    this.responses = new DueSweep(
      (db, at, limit) => sweepResponses(db, new Date(at - retentionMs), limit),
      now,
      batch,
    );
    this.chatCompletions = new DueSweep(
      (db, at, limit) => sweepChatCompletions(db, new Date(at - retentionMs), limit),
      now,
      batch,
    );
  }

  static days(days: number, now?: () => number): StoredRetention {
    return new StoredRetention(days * 24 * 60 * 60_000, now);
  }

  /** Deletes one batch of expired responses if a sweep is due; the number deleted, or null. */
  async sweepResponsesIfDue(db: Db): Promise<number | null> {
    return this.retentionMs === 0 ? null : this.responses.ifDue(db);
  }

  /** Deletes one batch of expired chat completions if a sweep is due; the number deleted, or null. */
  async sweepChatCompletionsIfDue(db: Db): Promise<number | null> {
    return this.retentionMs === 0 ? null : this.chatCompletions.ifDue(db);
  }
}
