// The worker-level benchmarks' worker: the real worker core (engine thread, adapter tiers, scheduler,
// replies) on an in-process bus, or on NATS JetStream in a namespace of the run's own, its adapters read
// from the model folder's adapters/, and the bus side the benchmark sends requests from.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Bus } from "../bus/bus.ts";
import { InProcessBroker } from "../bus/in-process.ts";
import { connectJetStreamBus } from "../bus/jetstream.ts";
import { FolderBlobStore } from "../worker/adapters/blob-store.ts";
import { LuminetWorker, type WorkerOptions } from "../worker/main.ts";
import { benchNamespace, removeNamespace } from "./nats-namespace.ts";

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

/** Where the worker pulls from: the in-process bus, or NATS at this URL. */
export interface BenchBusChoice {
  natsUrl?: string;
}

export interface BenchWorker {
  worker: LuminetWorker;
  /** Where the benchmark publishes requests and opens reply inboxes. */
  gateway: Bus;
  /** Drains the worker and removes its scratch folders. */
  stop(): Promise<void>;
}

export async function startBenchWorker(options: BenchWorkerOptions & BenchBusChoice): Promise<BenchWorker> {
  const { natsUrl, ...workerOptions } = options;
  const cacheDir = mkdtempSync(join(tmpdir(), "luminet-bench-worker-"));
  // Requests wait as long as a slow machine needs: none is redelivered while the benchmark runs.
  const ackWaitMs = 10 * 60_000;
  const { gateway, workerBus, closeBus } = await benchBus(natsUrl, ackWaitMs);
  const cleanUp = async () => {
    await closeBus();
    rmSync(cacheDir, { recursive: true, force: true });
  };
  let worker: LuminetWorker;
  try {
    worker = await LuminetWorker.start({
      ...workerOptions,
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

/** The two ends of the benchmark's bus, and how to close them (a NATS namespace is removed). */
async function benchBus(
  natsUrl: string | undefined,
  ackWaitMs: number,
): Promise<{ gateway: Bus; workerBus: Bus; closeBus: () => Promise<void> }> {
  if (natsUrl === undefined) {
    const broker = new InProcessBroker({ ackWaitMs });
    const [gateway, workerBus] = [broker.connect(), broker.connect()];
    return {
      gateway,
      workerBus,
      closeBus: async () => void (await Promise.all([gateway.close(), workerBus.close()])),
    };
  }
  const namespace = benchNamespace("worker");
  const connect = (connectionName: string) =>
    connectJetStreamBus({ servers: natsUrl, namespace, connectionName, ackWaitMs });
  const gateway = await connect("luminet-bench-gateway");
  const workerBus = await connect("luminet-bench-worker");
  return {
    gateway,
    workerBus,
    closeBus: async () => {
      await Promise.all([gateway.close(), workerBus.close()]);
      await removeNamespace(natsUrl, namespace);
    },
  };
}
