// How many batch lines each base's workers have room for now, read from their heartbeats: a Node gateway's
// batch runner sends a base's lines only into that room, so batches fill capacity live traffic leaves idle
// and back off as it grows. Batch lines may fill up to a share of a worker's places (its --max-batch; the
// gateway's --batch-fill, 3/4 by default); the rest stays free for bursts of live requests, which a worker
// also admits before queued batch lines.
import type { WorkerHeartbeat } from "../schema/wire.ts";

/** The share of a worker's places batch lines may fill by default, counting the live requests it runs. */
export const DEFAULT_BATCH_FILL = 0.75;

export interface BaseRoom {
  /** Lines the base's workers can take now (Infinity when a worker does not report its --max-batch). */
  places: number;
  /** The oldest heartbeat counted (ms): lines sent after it are not in its counts yet. */
  asOf: number;
}

/** Per base with a live worker, the room batch lines have on its workers, filling `fill` of their places. */
export function batchRoom(
  heartbeats: readonly WorkerHeartbeat[],
  fill = DEFAULT_BATCH_FILL,
): Map<string, BaseRoom> {
  const rooms = new Map<string, BaseRoom>();
  for (const beat of heartbeats) {
    const room = rooms.get(beat.base) ?? { places: 0, asOf: beat.at };
    // A worker's own backlog counts against its places: a worker that is over them leaves no room, but
    // takes none from the others (each line is routed to one worker).
    const places =
      beat.max_batch === undefined
        ? Number.POSITIVE_INFINITY
        : Math.max(0, Math.floor(beat.max_batch * fill) - beat.running - beat.queue_depth);
    rooms.set(beat.base, { places: room.places + places, asOf: Math.min(room.asOf, beat.at) });
  }
  return rooms;
}
