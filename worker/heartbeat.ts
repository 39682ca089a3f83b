// The worker's heartbeat: every second it puts what the gateway routes on (adapters per tier, pins, free
// slots, queue depth, running sequences, tokens/s) into the heartbeat KV bucket. A worker that stops
// beating drops out of the bucket after its TTL, and out of routing with it. A worker that cannot take
// requests (its queue's consumer is gone and cannot be created again) leaves the bucket at once and puts
// nothing until it can: gateways route elsewhere rather than to a worker that never answers.
import type { Bus } from "../bus/bus.ts";
import { logger } from "../core/logger.ts";
import { WIRE_VERSION, type WorkerHeartbeat } from "../schema/wire.ts";

/** What a heartbeat reports, read fresh at every beat. tokens_per_s is derived from `tokensGenerated`. */
export type WorkerState = Omit<WorkerHeartbeat, "v" | "at" | "tokens_per_s"> & {
  /** Tokens generated since the worker started. */
  tokensGenerated: number;
};

export class Heartbeat {
  private timer: ReturnType<typeof setInterval> | null = null;
  /** The beat being stored, if any. */
  private inFlight: Promise<void> | null = null;
  private last: { at: number; tokens: number } | null = null;
  /** Why the last beat could not be stored, or null once one was. */
  private failure: string | null = null;
  /** Why the last beat was withheld, or null when it was put. */
  private withheld: string | null = null;

  constructor(
    private readonly bus: Bus,
    private readonly state: () => WorkerState,
    private readonly intervalMs = 1000,
    private readonly onBeat?: (heartbeat: WorkerHeartbeat) => void,
    /** Why the worker cannot take requests now (no beat is put meanwhile), or null. */
    private readonly notReady: () => string | null = () => null,
  ) {}

  /** Beats once now (resolves when stored) and then every interval. */
  async start(): Promise<void> {
    await this.beat();
    this.timer = setInterval(() => {
      // A beat still in flight (NATS slow or reconnecting) makes this one skip, not queue behind it: a
      // queue would grow by one a second through an outage, and a stop would wait for all of it.
      if (this.inFlight) return;
      this.inFlight = this.beat().finally(() => {
        this.inFlight = null;
      });
    }, this.intervalMs);
  }

  /** Stops beating; resolves once a beat in flight has finished. */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.inFlight;
  }

  /**
   * Why the worker's beats do not reach the bucket (NATS cannot be reached), or null: gateways then see it
   * as gone after the TTL, and it takes no new requests.
   */
  get problem(): string | null {
    return this.failure === null ? null : `cannot store heartbeats: ${this.failure}`;
  }

  /** The heartbeat as of now. */
  snapshot(): WorkerHeartbeat {
    const { tokensGenerated, ...state } = this.state();
    const now = Date.now();
    const previous = this.last;
    const seconds = previous ? (now - previous.at) / 1000 : 0;
    const rate = previous && seconds > 0 ? Math.max(0, tokensGenerated - previous.tokens) / seconds : 0;
    this.last = { at: now, tokens: tokensGenerated };
    return { v: WIRE_VERSION, ...state, tokens_per_s: rate, at: now };
  }

  private async beat(): Promise<void> {
    const heartbeat = this.snapshot();
    const reason = this.notReady();
    if (reason !== null) {
      if (this.withheld === null) await this.leave(heartbeat, reason);
      this.withheld = reason;
      this.onBeat?.(heartbeat);
      return;
    }
    if (this.withheld !== null) logger.warn("the worker can take requests again: heartbeats resume");
    this.withheld = null;
    try {
      await this.bus.putHeartbeat(heartbeat);
      if (this.failure !== null) logger.info("heartbeats are stored again");
      this.failure = null;
    } catch (error) {
      // Logged once per outage, not once a second.
      if (this.failure === null) {
        logger.warn({ err: error }, "storing the heartbeat failed; retrying every beat");
      }
      this.failure = error instanceof Error ? error.message : String(error);
    }
    this.onBeat?.(heartbeat);
  }

  /** Takes the worker out of the bucket now, not after the TTL, so gateways stop routing to it. */
  private async leave(heartbeat: WorkerHeartbeat, reason: string): Promise<void> {
    logger.error({ reason }, "the worker cannot take requests: heartbeats stop until it can");
    try {
      await this.bus.removeHeartbeat(heartbeat.base, heartbeat.worker_id);
    } catch (error) {
      // Its entry then expires after the TTL.
      logger.warn({ err: error }, "leaving the heartbeat bucket failed");
    }
  }
}
