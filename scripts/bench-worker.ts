// The worker-level benchmarks' worker: the real worker core (engine thread, adapter tiers, scheduler,
// replies) on an in-process bus, its adapters read from the model folder's adapters/, and the bus side
// the benchmark sends requests from.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Bus } from "../bus/bus.ts";
import { InProcessBroker } from "../bus/in-process.ts";
import { FolderBlobStore } from "../worker/adapters/blob-store.ts";
import { LuminetWorker, type WorkerOptions } from "../worker/main.ts";

/** The base name benchmark requests use. */
export const BENCH_BASE = "bench-1b";

/** What differs between the benchmarks; the tiers, the bus and the names are the same for all. */
export type BenchWorkerOptions = Pick<
  WorkerOptions,
  | "modelDir"
  | "device"
  | "slots"
  | "maxAdaptersPerBatch"
  | "maxRank"
  | "maxBatch"
  | "maxContext"
  | "stepTokens"
  | "prefixCacheBytes"
>;

export interface BenchWorker {
  worker: LuminetWorker;
  /** Where the benchmark publishes requests and opens reply inboxes. */
  gateway: Bus;
  /** Drains the worker and removes its scratch folders. */
  stop(): Promise<void>;
}

export async function startBenchWorker(options: BenchWorkerOptions): Promise<BenchWorker> {
  const cacheDir = mkdtempSync(join(tmpdir(), "luminet-bench-worker-"));
  // Requests wait as long as a slow machine needs: none is redelivered while the benchmark runs.
  const ackWaitMs = 10 * 60_000;
  const broker = new InProcessBroker({ ackWaitMs });
  const gateway = broker.connect();
  const workerBus = broker.connect();
  const cleanUp = async () => {
    await Promise.all([gateway.close(), workerBus.close()]);
    rmSync(cacheDir, { recursive: true, force: true });
  };
  let worker: LuminetWorker;
  try {
    worker = await LuminetWorker.start({
      ...options,
      bus: workerBus,
      base: BENCH_BASE,
      workerId: "bench",
      ramCacheBytes: 2 ** 30,
      diskCacheDir: cacheDir,
      diskCacheBytes: 4 * 2 ** 30,
      blobs: new FolderBlobStore(join(options.modelDir, "adapters")),
      ackWaitMs,
    });
  } catch (error) {
    await cleanUp();
    throw error;
  }
  return {
    worker,
    gateway,
    stop: async () => {
      await worker.drain();
      await cleanUp();
    },
  };
}
