// Adapter control events on a worker: pin, unpin, delete and update of one adapter, as the admin API
// publishes them. The bus replays the latest event of every adapter of the base at subscribe time and then
// delivers new ones as they come, so every worker of the base converges on the same pins and deletions
// within a network hop, including a worker that starts late. A pin whose adapter could not be fetched
// (the blob store unreachable for a while) is tried again, backing off, until it lands or a later event
// of that adapter replaces it: otherwise the pin the admin API reports would be missing here for good.
import type { Bus, Subscription } from "../bus/bus.ts";
import { logger } from "../core/logger.ts";
import type { AdapterControl, AdapterRef } from "../schema/wire.ts";
import { AdapterFetchError } from "./adapters/adapter-manager.ts";
import { JobError } from "./scheduler.ts";

/** What control events act on: the adapter tiers and the scheduler. */
export interface ControlTargets {
  pin(ref: AdapterRef): Promise<void>;
  unpin(name: string): void;
  remove(name: string): Promise<void>;
  prefetch(ref: AdapterRef): void;
  /** A new adapter: loads it ahead of its first request if this is the worker that request will go to. */
  stageNew(ref: AdapterRef): void;
  /** Adapter names resident in a slot or in RAM: an update warms their new version. */
  warm(): string[];
  failAdapter(name: string, error: JobError): void;
}

/**
 * A create event older than this is not acted on: a worker that starts later sees the latest event of every
 * adapter again, and loading every adapter ever created would be a stampede, not a head start.
 */
export const NEW_ADAPTER_MS = 60_000;

/** The 404 a request for a deleted adapter ends with. */
export function deletedAdapterError(name: string): JobError {
  return new JobError("model_not_found", `adapter ${name} was deleted`);
}

export interface PinRetryOptions {
  /** The wait before a failed pin's first retry; each later one waits twice as long, up to maxMs. */
  firstMs: number;
  maxMs: number;
}

const PIN_RETRY: PinRetryOptions = { firstMs: 1_000, maxMs: 60_000 };

export class AdapterControls {
  /** Deleted adapter names, until an update brings the name back. */
  private readonly deleted = new Set<string>();
  /** Events apply one after another, so a pin and the unpin right after it land in order. */
  private queue: Promise<void> = Promise.resolve();
  /** Each adapter's latest event: a pin retry goes ahead only while its event is still the latest. */
  private readonly latest = new Map<string, AdapterControl>();
  private readonly retries = new Set<NodeJS.Timeout>();
  private stopped = false;

  constructor(
    private readonly targets: ControlTargets,
    private readonly pinRetry: PinRetryOptions = PIN_RETRY,
  ) {}

  /** Subscribes to the base's control events; resolves once subscribed. */
  static async follow(
    bus: Bus,
    base: string,
    targets: ControlTargets,
  ): Promise<{ controls: AdapterControls; subscription: Subscription }> {
    const controls = new AdapterControls(targets);
    const subscription = await bus.onControl(base, (event) => controls.apply(event));
    return { controls, subscription };
  }

  isDeleted(name: string): boolean {
    return this.deleted.has(name);
  }

  /** Resolves once every event received so far has taken effect. */
  settled(): Promise<void> {
    return this.queue;
  }

  /** Cancels the pin retries still waiting; events applied later are ignored. */
  stop(): void {
    this.stopped = true;
    for (const timer of this.retries) clearTimeout(timer);
    this.retries.clear();
  }

  apply(event: AdapterControl): void {
    if (this.stopped) return;
    this.latest.set(event.adapter, event);
    if (event.kind === "delete") {
      // Requests stop at once; freeing the tiers may wait for the events before it.
      this.deleted.add(event.adapter);
      this.targets.failAdapter(event.adapter, deletedAdapterError(event.adapter));
    } else this.deleted.delete(event.adapter);
    this.queue = this.queue.then(() => this.act(event));
  }

  private async act(event: AdapterControl, attempt = 0): Promise<void> {
    const { adapter } = event;
    const ref = event.blob ? { name: adapter, ...event.blob } : null;
    try {
      if (event.kind === "delete") await this.targets.remove(adapter);
      else if (event.kind === "create") {
        if (ref && Date.now() - event.at <= NEW_ADAPTER_MS) this.targets.stageNew(ref);
      } else if (!event.pinned || !ref) {
        this.targets.unpin(adapter);
        if (event.kind === "update" && ref && this.targets.warm().includes(adapter))
          this.targets.prefetch(ref);
      } else {
        // Not awaited: a pin waiting for a free slot must not hold up the events after it.
        this.targets.pin(ref).then(
          () => logger.info({ adapter, sha256: ref.sha256, attempt }, "adapter pinned"),
          (error: Error) => {
            if (error instanceof AdapterFetchError) this.retryPin(event, attempt, error);
            else logger.error({ adapter, err: error }, `pin of adapter ${adapter} refused: ${error.message}`);
          },
        );
      }
    } catch (error) {
      logger.error({ adapter, kind: event.kind, err: error }, `control event for adapter ${adapter} failed`);
    }
  }

  private retryPin(event: AdapterControl, attempt: number, error: AdapterFetchError): void {
    if (this.stopped) return;
    const waitMs = Math.min(this.pinRetry.firstMs * 2 ** attempt, this.pinRetry.maxMs);
    logger.warn(
      { adapter: event.adapter, err: error, retryInMs: waitMs },
      `pin of adapter ${event.adapter} failed, trying again in ${waitMs / 1000} s: ${error.message}`,
    );
    const timer = setTimeout(() => {
      this.retries.delete(timer);
      if (this.latest.get(event.adapter) !== event) return;
      this.queue = this.queue.then(() => this.act(event, attempt + 1));
    }, waitMs);
    timer.unref();
    this.retries.add(timer);
  }
}
