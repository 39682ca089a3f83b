// How a worker's usage events reach the usage stream: kept on local disk first (worker/usage-spool.ts),
// then published until JetStream stores them, then forgotten. At start it sends again what an earlier
// process on the same spool left unsent. A request counts once however often its event is sent: the
// request id is the JetStream message id and the billing row's key.
import type { Bus } from "../bus/bus.ts";
import { logger } from "../core/logger.ts";
import type { UsageEvent } from "../schema/wire.ts";
import type { UsageSpool } from "./usage-spool.ts";

/**
 * Pauses between attempts at storing a usage event: growing from `firstMs` to at most `maxMs`. Attempts go
 * on for as long as the process lives — a NATS outage of any length loses no usage (JetStream drops the
 * duplicates retries may make) — and the request stays unacked meanwhile. A drain waits for them, except
 * for events on the spool, which the next process sends.
 */
export interface UsageRetry {
  firstMs: number;
  maxMs: number;
}

const USAGE_RETRY: UsageRetry = { firstMs: 250, maxMs: 5_000 };
/** After the first failure, one warning per this many attempts, not one per attempt. */
const WARN_EVERY = 10;

export class UsageSender {
  private closed = false;
  private sending = 0;
  private readonly resending = new Set<Promise<void>>();

  /** Without a spool, an event lives only in this process until stored (tests, benchmarks). */
  constructor(
    private readonly bus: Bus,
    private readonly spool: UsageSpool | null,
    private readonly retry: UsageRetry = USAGE_RETRY,
  ) {}

  /**
   * Resolves once the usage stream stored the event, retrying for as long as it takes — or, once close()
   * was called, as soon as an attempt fails, if the event is on the spool: the next process sends it. An
   * event only in memory is never given up.
   */
  async send(event: UsageEvent): Promise<boolean> {
    this.sending++;
    try {
      const spooled = await this.keep(event);
      const stored = await this.store(event, () => this.closed && spooled);
      if (stored) await this.forget(event);
      else logger.warn({ request: event.request_id }, "usage event left on the spool for the next start");
      return stored;
    } finally {
      this.sending--;
    }
  }

  /** Usage events not stored yet: being sent, retried through an outage, or resent from the spool. */
  get waiting(): number {
    return this.sending + this.resending.size;
  }

  /**
   * Sends in the background the events an earlier process left on the spool; returns how many. Those still
   * unsent at close() stay on disk for the next process.
   */
  resendSpooled(): number {
    const held = this.spool?.held() ?? [];
    if (held.length > 0)
      logger.info({ events: held.length }, "sending usage events spooled by an earlier run");
    for (const event of held) {
      const sending = this.store(event, () => this.closed)
        .then((stored) => (stored ? this.forget(event) : undefined))
        .finally(() => this.resending.delete(sending));
      this.resending.add(sending);
    }
    return held.length;
  }

  /**
   * Stops resending spooled events and lets sends of spooled events give up at their next failure (both stay
   * on disk); resolves once the resends stopped.
   */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.all([...this.resending]);
  }

  /**
   * True once the event is on disk. A disk that refuses the write must not hold billing up: the event is
   * then only as safe as this process.
   */
  private async keep(event: UsageEvent): Promise<boolean> {
    if (!this.spool) return false;
    try {
      await this.spool.keep(event);
      return true;
    } catch (error) {
      logger.error({ err: error, request: event.request_id }, "spooling a usage event to disk failed");
      return false;
    }
  }

  /** Left on disk, a stored event is sent once more by the next process: harmless. */
  private async forget(event: UsageEvent): Promise<void> {
    try {
      await this.spool?.forget(event.request_id);
    } catch (error) {
      logger.warn(
        { err: error, request: event.request_id },
        "removing a sent usage event from the spool failed",
      );
    }
  }

  /** True once stored; false when `stop()` said so after a failed attempt. */
  private async store(event: UsageEvent, stop: () => boolean): Promise<boolean> {
    const { firstMs, maxMs } = this.retry;
    // One attempt always: stop() only ends the retries after a failure.
    for (let attempt = 1; ; attempt++) {
      try {
        await this.bus.publishUsage(event);
        if (attempt > 1) logger.info({ request: event.request_id, attempt }, "usage event stored");
        return true;
      } catch (error) {
        if (stop()) return false;
        if (attempt % WARN_EVERY === 1) {
          logger.warn(
            { err: error, request: event.request_id, attempt },
            "storing a usage event failed; retrying until it is stored",
          );
        }
        await new Promise((resolve) => setTimeout(resolve, Math.min(maxMs, firstMs * attempt)));
      }
    }
  }
}
