// How long stored Responses API responses and stored chat completions are kept: every gateway process
// deletes those older than the retention, a batch at a time when its sweep of that table is due
// (due-sweep.ts).
import type { Db } from "../db/open.ts";
import { sweepChatCompletions } from "./chat-completion-store.ts";
import type { GatewayLog } from "./deps.ts";
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

  /**
   * After a response was stored: deletes one batch of expired responses if that sweep is due, logging what
   * it deleted or why it could not (the response stands either way). Nothing with retention 0.
   */
  async afterStoringResponse(db: Db, log: GatewayLog, fields: object): Promise<void> {
    if (this.retentionMs === 0) return;
    await this.responses.afterWrite(
      db,
      log,
      { rows: "old responses", expired: "responses past their retention" },
      fields,
    );
  }

  /** After a chat completion was stored: the same for stored chat completions. */
  async afterStoringChatCompletion(db: Db, log: GatewayLog, fields: object): Promise<void> {
    if (this.retentionMs === 0) return;
    await this.chatCompletions.afterWrite(
      db,
      log,
      { rows: "old chat completions", expired: "chat completions past their retention" },
      fields,
    );
  }
}
