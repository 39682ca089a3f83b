// Queues left behind by dead workers. A gateway may route a request to one worker's own queue
// (`infer.<base>.<worker>`); if that worker dies, nobody else pulls that subject. Every live worker of the
// base watches the heartbeats and, when a worker it saw stops beating, pulls that worker's queue for a
// while (JetStream gives each request to one of them). Requests the dead worker held come back there after
// their ack wait. A worker that starts after another died never saw it beat: it starts by remembering every
// worker whose queue holds requests, so the queue of one that is not live is adopted all the same (a sole
// worker replaced under a new id).
import type { Subscription } from "../bus/bus.ts";
import { logger } from "../core/logger.ts";
import type { WorkerHeartbeat } from "../schema/wire.ts";

export class OrphanQueues {
  /** Workers seen beating and not yet found dead. */
  private readonly known = new Set<string>();
  /** Queues being pulled, by dead worker id. */
  private readonly adopted = new Map<string, Promise<Subscription>>();

  constructor(
    private readonly self: string,
    /** Starts pulling the dead worker's queue; the subscription stops it (it may also stop by itself). */
    private readonly adopt: (workerId: string) => Promise<Subscription>,
  ) {}

  /** Counts these workers as seen, so the next observe adopts the queue of each one not live. */
  remember(workerIds: readonly string[]): void {
    for (const id of workerIds) if (id !== this.self) this.known.add(id);
  }

  /** Takes the base's live heartbeats; adopts the queue of every known worker missing from them. */
  observe(live: readonly WorkerHeartbeat[]): void {
    const alive = new Set(live.map((h) => h.worker_id));
    for (const id of this.known) {
      if (alive.has(id)) continue;
      this.known.delete(id);
      if (!this.adopted.has(id)) {
        const adoption = this.adopt(id);
        this.adopted.set(id, adoption);
        adoption.catch((error: Error) => {
          this.adopted.delete(id);
          // Known again, so the next observe tries again (NATS back from a restart, say): left out, the
          // queue would wait for the next worker to start.
          this.known.add(id);
          logger.error(
            { err: error, dead: id },
            "cannot pull a dead worker's queue; trying again at the next heartbeat",
          );
        });
      }
    }
    for (const id of alive) {
      if (id === this.self) continue;
      this.known.add(id);
      const adoption = this.adopted.get(id);
      if (adoption) {
        // It is back and pulls its own queue again.
        this.adopted.delete(id);
        void adoption.then((subscription) => subscription.close());
      }
    }
  }
}
