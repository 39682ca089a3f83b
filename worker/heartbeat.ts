// The worker's heartbeat: every second it puts what the gateway routes on (adapters per tier, pins, free
// slots, queue depth, running sequences, tokens/s) into the heartbeat KV bucket. A worker that stops
// beating drops out of the bucket after its TTL, and out of routing with it.
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
  private inFlight: Promise<void> = Promise.resolve();
  private last: { at: number; tokens: number } | null = null;
  private failing = false;

  constructor(
    private readonly bus: Bus,
    private readonly state: () => WorkerState,
    private readonly intervalMs = 1000,
    private readonly onBeat?: (heartbeat: WorkerHeartbeat) => void,
  ) {}

  /** Beats once now (resolves when stored) and then every interval. */
  async start(): Promise<void> {
    await this.beat();
    this.timer = setInterval(() => {
      // A beat still in flight (NATS slow or reconnecting) is not stacked on.
      this.inFlight = this.inFlight.then(() => this.beat());
    }, this.intervalMs);
  }

  /** Stops beating; resolves once a beat in flight has finished. */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.inFlight;
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
    try {
      await this.bus.putHeartbeat(heartbeat);
      if (this.failing) logger.info("heartbeats are stored again");
      this.failing = false;
    } catch (error) {
      // Logged once per outage, not once a second.
      if (!this.failing) logger.warn({ err: error }, "storing the heartbeat failed; retrying every beat");
      this.failing = true;
    }
    this.onBeat?.(heartbeat);
  }
}
