// The durable consumers a process pulls from, and what brings one back when it vanishes under the process:
// an operator deletes it, or a cleanup deletes its stream (and perhaps creates it again). nats.js then only
// reports a deleted consumer and missed heartbeats, forever: a worker would pull nothing and a meter bill
// nothing while both look fine. So a puller whose pull fails asks restore(): it asks the server whether the
// consumer is there and, when the server says it (or its stream) is not, creates the streams as at connect
// and the durable again, both idempotently. Pullers of one durable (the meter's subscriptions) share one
// attempt, so one deletion makes one warning. It waits a second before creating: nats-server (2.9) finishes
// a deletion on disk after answering it, and a stream or consumer created again under the same name at once
// lost its files to that cleanup (publishes then failed, "error opening msg block file") or made the
// operator's next deletion fail ("directory not empty").
//
// A recreated durable starts from the first message its stream still holds: a work-queue stream keeps what
// was not acked, so nothing queued is lost, and what the old consumer delivered but could not ack is
// delivered again (the meter's rows are keyed by request id; a worker's second claim is refused).
import {
  AckPolicy,
  type Consumer,
  type ConsumerConfig,
  JetStreamApiCodes,
  JetStreamApiError,
  type JetStreamClient,
  type JetStreamManager,
} from "@nats-io/jetstream";

/** How long after finding a consumer or stream gone it is created again. */
const RECREATE_AFTER_MS = 1_000;

export type DurableConfig = Partial<ConsumerConfig> & { durable_name: string };

/**
 * What restore found: the consumer was there (the pull failed for another reason), was gone and is back,
 * or the server could not be asked (disconnected, timed out): nothing to do but pull again.
 */
export type Restored = "present" | "recreated" | "unknown";

/** The consumer (or its stream) is gone and could not be created again. */
export class DurableRestoreError extends Error {
  override readonly name = "DurableRestoreError";
}

export interface DurableEvents {
  /** A consumer was found gone and created again. */
  recreated: (what: { stream: string; consumer: string; gone: "consumer" | "stream" }) => void;
  /** Creating it again failed; restore() rejects with the same error, reported here once per attempt. */
  failed: (error: DurableRestoreError) => void;
}

export class JetStreamDurables {
  readonly #restoring = new Map<string, Promise<Restored>>();

  constructor(
    private readonly jsm: JetStreamManager,
    private readonly js: JetStreamClient,
    /** Creates every stream as at connect (bringing existing ones to this build's configuration). */
    private readonly setUpStreams: () => Promise<void>,
    private readonly events: DurableEvents,
  ) {}

  /** Creates the durable, or finds it with this configuration, and binds a consumer to it. */
  async create(stream: string, config: DurableConfig): Promise<Consumer> {
    await this.jsm.consumers.add(stream, { ack_policy: AckPolicy.Explicit, ...config });
    return this.js.consumers.get(stream, config.durable_name);
  }

  /** Creates the durable again if the server says it is gone; rejects with DurableRestoreError if it cannot. */
  restore(stream: string, config: DurableConfig): Promise<Restored> {
    const key = `${stream}/${config.durable_name}`;
    let attempt = this.#restoring.get(key);
    if (!attempt) {
      attempt = this.#restore(stream, config).finally(() => this.#restoring.delete(key));
      this.#restoring.set(key, attempt);
    }
    return attempt;
  }

  async #restore(stream: string, config: DurableConfig): Promise<Restored> {
    const consumer = config.durable_name;
    let gone: "consumer" | "stream";
    try {
      await this.jsm.consumers.info(stream, consumer);
      return "present";
    } catch (error) {
      if (!(error instanceof JetStreamApiError)) return "unknown";
      if (error.code === JetStreamApiCodes.ConsumerNotFound) gone = "consumer";
      else if (error.code === JetStreamApiCodes.StreamNotFound) gone = "stream";
      else return "unknown";
    }
    await new Promise((resolve) => setTimeout(resolve, RECREATE_AFTER_MS));
    try {
      if (gone === "stream") await this.setUpStreams();
      await this.jsm.consumers.add(stream, { ack_policy: AckPolicy.Explicit, ...config });
    } catch (error) {
      const what = gone === "stream" ? `stream ${stream}` : `consumer ${consumer} of stream ${stream}`;
      const failure = new DurableRestoreError(
        `the JetStream ${what} is gone and could not be created again: ${(error as Error).message}`,
        { cause: error },
      );
      this.events.failed(failure);
      throw failure;
    }
    this.events.recreated({ stream, consumer, gone });
    return "recreated";
  }
}
