// The room batch lines have on a base's workers, from their heartbeats: a share (3/4 by default) of each worker's places
// less what it runs and queues, summed over the base's workers, a worker over its share taking none from
// the others; unlimited where a worker does not report its --max-batch; as of the oldest heartbeat.
import { describe, expect, it } from "vitest";
import { batchRoom, DEFAULT_BATCH_FILL } from "../../gateway/batch-room.ts";
import type { WorkerHeartbeat } from "../../schema/wire.ts";
import { idleHeartbeat } from "../support/heartbeats.ts";

let workers = 0;
const beat = (base: string, fields: Partial<WorkerHeartbeat>) =>
  idleHeartbeat(`w${++workers}`, { base, at: 1_000, ...fields });

describe("batchRoom", () => {
  it("sums each worker's free share of its places, per base, as of the oldest heartbeat", () => {
    expect(DEFAULT_BATCH_FILL).toBe(0.75);
    const rooms = batchRoom([
      beat("a", { max_batch: 16, running: 4, queue_depth: 2, at: 2_000 }),
      // Over its share: no room, and none taken from the worker above.
      beat("a", { max_batch: 8, running: 8, queue_depth: 3, at: 1_500 }),
      beat("b", { max_batch: 64, running: 0, at: 3_000 }),
      beat("c", { running: 10 }),
    ]);
    expect(rooms.get("a")).toEqual({ places: 12 - 6, asOf: 1_500 });
    expect(rooms.get("b")).toEqual({ places: 48, asOf: 3_000 });
    expect(rooms.get("c")?.places).toBe(Number.POSITIVE_INFINITY);
    expect(rooms.has("d")).toBe(false);
  });

  it("fills the share it is given: all of a worker dedicated to batches", () => {
    const busy = [beat("a", { max_batch: 16, running: 4, queue_depth: 2 })];
    expect(batchRoom(busy, 1).get("a")?.places).toBe(10);
    expect(batchRoom(busy, 0.5).get("a")?.places).toBe(2);
  });
});
