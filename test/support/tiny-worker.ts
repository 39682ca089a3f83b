// A LuminetWorker's options for tests on a gateway harness's tiny model: two slots and sequences, one
// engine thread, its caches and blob folder under `root`; `overrides` for what a test is about.
import { join } from "node:path";
import { openBlobStore } from "../../worker/adapters/blob-store.ts";
import { parseDevice } from "../../worker/engine/device.ts";
import type { WorkerOptions } from "../../worker/main.ts";
import { BASE, type GatewayHarness } from "./gateway-harness.ts";

export function tinyWorkerOptions(
  h: GatewayHarness,
  root: string,
  overrides: Partial<WorkerOptions> & { workerId: string },
): WorkerOptions {
  return {
    bus: h.workerBus,
    base: BASE,
    modelDir: h.modelDir,
    device: parseDevice("cpu"),
    slots: 2,
    maxAdaptersPerBatch: 2,
    maxRank: 8,
    maxBatch: 2,
    maxContext: 64,
    stepTokens: 64,
    ramCacheBytes: 2 ** 22,
    diskCacheDir: join(root, "cache"),
    diskCacheBytes: 2 ** 24,
    blobs: openBlobStore(join(root, "blobs")),
    ackWaitMs: 30_000,
    threads: 1,
    ...overrides,
  };
}
