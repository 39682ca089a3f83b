// The meter: usage events from the bus's durable consumer into billing rows, exactly once. Step 5 of
// DESIGN.md's "A request's path"; runs alone (`luminet meter`) or inside the Node gateway.
//
// The bus hands a subscription one event at a time and acks it only after the handler resolves, so the
// meter opens `batchSize` subscriptions and parks each handler until the batch holding its event has
// committed (group commit): while one transaction runs, the next batch gathers. An event is acked only
// after its row is committed; if the database fails, every handler of the batch throws, the bus naks those
// events and JetStream delivers them again later — while Postgres is down they wait there, and when it is
// back they land once (the request id is the row's key).
import type { Bus, Subscription } from "../bus/bus.ts";
import { type Logger, logger as rootLogger } from "../core/logger.ts";
import type { Db } from "../db/open.ts";
import type { UsageEvent } from "../schema/wire.ts";
import type { MeterMetrics } from "./metrics.ts";
import { writeUsageBatch } from "./usage-writer.ts";

export interface MeterOptions {
  bus: Bus;
  db: Db;
  /** Most events per transaction, and so the number of events in flight at once; default 32. */
  batchSize?: number;
  /** How long the first event after a quiet spell waits for others to share its transaction; default 100 ms. */
  flushMs?: number;
  logger?: Logger;
  /** Where the meter's series go; none by default. Its unbilled gauge reads the bus's usage backlog. */
  metrics?: MeterMetrics;
}

export interface Meter {
  /** Stops taking events, writes and acks those already taken, then resolves. */
  stop(): Promise<void>;
  /**
   * Why the meter is not billing now, or null: it is stopping, or the database refused its last batch
   * (until a later one commits). GET /readyz of `luminet meter --metrics-port` answers 503 with it.
   */
  problem(): string | null;
}

interface Waiting {
  event: UsageEvent;
  resolve: () => void;
  reject: (error: Error) => void;
}

export class MeterOptionError extends Error {
  override readonly name = "MeterOptionError";
}

/** The database refused or could not take a batch; its events go back to the queue. */
export class UsageWriteError extends Error {
  override readonly name = "UsageWriteError";
  constructor(events: number, cause: unknown) {
    const reason =
      cause instanceof Error ? (cause.cause instanceof Error ? cause.cause : cause).message : String(cause);
    super(`could not write ${events} usage event(s), they will be delivered again: ${reason}`, { cause });
  }
}

export async function startMeter(options: MeterOptions): Promise<Meter> {
  const batchSize = options.batchSize ?? 32;
  const flushMs = options.flushMs ?? 100;
  if (!Number.isSafeInteger(batchSize) || batchSize < 1) {
    throw new MeterOptionError(`batchSize must be an integer ≥ 1, got ${batchSize}`);
  }
  if (!Number.isFinite(flushMs) || flushMs < 0) {
    throw new MeterOptionError(`flushMs must be a number ≥ 0, got ${flushMs}`);
  }
  const metrics = options.metrics ?? null;
  metrics?.watchUnbilled(() => options.bus.usageBacklog());
  const batcher = new UsageBatcher(options.db, batchSize, flushMs, options.logger ?? rootLogger, metrics);
  const subscriptions: Subscription[] = [];
  try {
    for (let i = 0; i < batchSize; i++) {
      subscriptions.push(await options.bus.consumeUsage((event) => batcher.add(event)));
    }
  } catch (error) {
    await Promise.all(subscriptions.map((subscription) => subscription.close()));
    throw error;
  }
  return {
    problem: () => batcher.problem(),
    async stop() {
      batcher.stopping();
      // Closing a subscription waits for its handler, so every event taken is written (or nak'ed) first.
      await Promise.all(subscriptions.map((subscription) => subscription.close()));
      await batcher.idle();
    },
  };
}

class UsageBatcher {
  #waiting: Waiting[] = [];
  #timer: ReturnType<typeof setTimeout> | undefined;
  #writing: Promise<void> | undefined;
  #stopping = false;
  /** Why the last batch was not written, until one is. */
  #failure: string | null = null;

  constructor(
    private readonly db: Db,
    private readonly batchSize: number,
    private readonly flushMs: number,
    private readonly log: Logger,
    private readonly metrics: MeterMetrics | null,
  ) {}

  /** Resolves once the event's row is committed (or already existed); rejects if it was not written. */
  add(event: UsageEvent): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#waiting.push({ event, resolve, reject });
      this.#schedule();
    });
  }

  /** Meter.problem: stopping, or the last batch's refusal. */
  problem(): string | null {
    return this.#stopping ? "the meter is stopping" : this.#failure;
  }

  stopping(): void {
    this.#stopping = true;
    this.#schedule();
  }

  async idle(): Promise<void> {
    while (this.#writing) await this.#writing;
  }

  #schedule(): void {
    // A write in progress picks up whatever gathered when it finishes.
    if (this.#writing || this.#waiting.length === 0) return;
    if (this.#stopping || this.#waiting.length >= this.batchSize) {
      this.#flush();
      return;
    }
    this.#timer ??= setTimeout(() => this.#flush(), this.flushMs);
  }

  #flush(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    const batch = this.#waiting.splice(0, this.batchSize);
    this.#writing = this.#write(batch).finally(() => {
      this.#writing = undefined;
      // Events that arrived during the write have waited one write already: they go at once.
      if (this.#waiting.length > 0) this.#flush();
    });
  }

  async #write(batch: Waiting[]): Promise<void> {
    const started = performance.now();
    const seconds = () => (performance.now() - started) / 1000;
    try {
      const outcome = await writeUsageBatch(
        this.db,
        batch.map((waiting) => waiting.event),
      );
      this.metrics?.observeBatch(outcome, seconds());
      this.#failure = null;
      this.log.debug(
        { events: batch.length, inserted: outcome.inserted, duplicates: outcome.duplicates },
        "usage batch committed",
      );
      for (const waiting of batch) {
        const held = outcome.held.get(waiting.event.request_id);
        if (held) waiting.reject(held);
        else waiting.resolve();
      }
    } catch (error) {
      this.metrics?.observeBatch(null, seconds());
      const failure = new UsageWriteError(batch.length, error);
      this.#failure = failure.message;
      for (const waiting of batch) waiting.reject(failure);
    }
  }
}
