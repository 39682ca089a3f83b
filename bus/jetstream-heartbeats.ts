// A process's live view of the heartbeat KV bucket. Listing a KV (keys + gets) creates a server-side
// consumer per call, too heavy for a gateway asking on every request; instead one ordered consumer reads
// the latest value per key, then follows updates, into a local map.
//
// A bucket's max age drops stale entries on the server but tells no watcher, so the view ages entries
// itself: one is live for the TTL after this process received it (a local clock only, no skew). An entry
// already in the bucket when the view starts counts from then: a worker that just died can look live for
// up to one extra TTL right after a gateway starts.
import { DeliverPolicy, type JetStreamClient } from "@nats-io/jetstream";
import { decode, WorkerHeartbeat } from "../schema/wire.ts";

export class JetStreamHeartbeatView {
  #entries = new Map<string, { heartbeat: WorkerHeartbeat; seenAt: number }>();

  private constructor(
    private readonly ttlMs: number,
    private readonly onError: (error: Error) => void,
  ) {}

  /** Resolves once the bucket's current entries are in the view. */
  static async start(
    js: JetStreamClient,
    bucket: string,
    ttlMs: number,
    onError: (error: Error) => void,
  ): Promise<{ view: JetStreamHeartbeatView; stop: () => Promise<void> }> {
    const view = new JetStreamHeartbeatView(ttlMs, onError);
    const prefix = `$KV.${bucket}.`;
    const consumer = await js.consumers.get(`KV_${bucket}`, {
      filter_subjects: `${prefix}>`,
      deliver_policy: DeliverPolicy.LastPerSubject,
    });
    const initial = (await consumer.info()).num_pending;
    const messages = await consumer.consume();
    let markReady: () => void = () => {};
    const ready = new Promise<void>((resolve) => {
      markReady = resolve;
    });
    if (initial === 0) markReady();
    const loop = (async () => {
      for await (const msg of messages) {
        const key = msg.subject.slice(prefix.length);
        const operation = msg.headers?.get("KV-Operation") || "PUT";
        if (operation === "PUT") view.#put(key, msg.data);
        else view.#entries.delete(key);
        if (msg.info.pending === 0) markReady();
      }
    })().catch((error) => onError(error as Error));
    // A view whose consumer ended early stays as it is rather than leaving its first reader waiting.
    void loop.then(markReady);
    await ready;
    return {
      view,
      stop: async () => {
        await messages.close();
        await loop;
      },
    };
  }

  #put(key: string, data: Uint8Array): void {
    try {
      this.#entries.set(key, { heartbeat: decode(WorkerHeartbeat, data), seenAt: Date.now() });
    } catch (error) {
      this.onError(error as Error);
    }
  }

  live(base?: string): WorkerHeartbeat[] {
    const now = Date.now();
    const live: WorkerHeartbeat[] = [];
    for (const [key, { heartbeat, seenAt }] of this.#entries) {
      if (seenAt + this.ttlMs <= now) this.#entries.delete(key);
      else if (base === undefined || heartbeat.base === base) live.push(heartbeat);
    }
    return live;
  }
}
