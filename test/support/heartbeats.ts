// An idle worker's heartbeat for routing and scaling tests: nothing resident, 4 free slots; override fields.
import type { WorkerHeartbeat } from "../../schema/wire.ts";

export function idleHeartbeat(id: string, fields: Partial<WorkerHeartbeat> = {}): WorkerHeartbeat {
  return {
    v: 1,
    worker_id: id,
    base: "b",
    version: "t",
    adapters: { slot: [], ram: [], disk: [] },
    pins: [],
    free_slots: 4,
    queue_depth: 0,
    running: 0,
    tokens_per_s: 0,
    at: 0,
    ...fields,
  };
}
