// The requests this gateway sent to each worker since that worker's last heartbeat and still running. A
// heartbeat says a worker's queue as of its beat (each second), so a burst routed between two beats would
// see the same idle worker every time and all land on it; routing adds what this gateway sent a worker
// after its beat, and has not seen end, to that worker's queue. A later beat counts them itself; an ended
// one no longer loads the worker (a quick next turn of a conversation still finds its prefix cache).
import type { WorkerHeartbeat } from "../schema/wire.ts";

/** Longer than any beat interval: a send older than this is in every live worker's heartbeat. */
const KEEP_MS = 10_000;

export class RecentRoutes {
  /** Per worker, the send time of each request not yet ended. */
  readonly #running = new Map<string, Set<{ at: number }>>();

  constructor(private readonly now: () => number = Date.now) {}

  /** A request went to `workerId` now; the returned call says it ended (once is enough). */
  sent(workerId: string): () => void {
    const now = this.now();
    const running = this.#running.get(workerId) ?? new Set();
    for (const send of running) if (send.at <= now - KEEP_MS) running.delete(send);
    const send = { at: now };
    running.add(send);
    this.#running.set(workerId, running);
    return () => {
      running.delete(send);
      if (running.size === 0 && this.#running.get(workerId) === running) this.#running.delete(workerId);
    };
  }

  /** The heartbeats with what was sent to each worker after its beat, and still runs, added to its queue. */
  withSentSinceBeat(heartbeats: readonly WorkerHeartbeat[]): WorkerHeartbeat[] {
    return heartbeats.map((beat) => {
      let since = 0;
      for (const send of this.#running.get(beat.worker_id) ?? []) if (send.at > beat.at) since++;
      return since === 0 ? beat : { ...beat, queue_depth: beat.queue_depth + since };
    });
  }
}
