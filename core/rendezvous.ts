// Rendezvous (highest random weight) hashing of adapters onto workers: each key prefers one worker of a
// set, and removing a worker moves only the keys that preferred it. The gateway places a cold adapter with
// it (gateway/routing.ts); a worker uses it to tell whether a newly created adapter will land on it.
import type { WorkerHeartbeat } from "../schema/wire.ts";

/** A well-mixed 32-bit hash (FNV-1a, then murmur3's finaliser) of a string. */
function hash32(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** Rendezvous (highest random weight) hashing: the worker this key prefers among the given ones. */
export function rendezvous(key: string, workers: readonly WorkerHeartbeat[]): WorkerHeartbeat | undefined {
  let best: WorkerHeartbeat | undefined;
  let bestScore = -1;
  for (const worker of workers) {
    const score = hash32(`${key}\0${worker.worker_id}`);
    if (score > bestScore || (score === bestScore && best && worker.worker_id < best.worker_id)) {
      best = worker;
      bestScore = score;
    }
  }
  return best;
}
