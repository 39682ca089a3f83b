// A worker whose engine thread ends on its own (a crash in it) stops serving: it drains — leaves the
// heartbeat bucket, so gateways route elsewhere and the base's other workers take its queue — and tells its
// owner (`luminet worker` then exits non-zero for its supervisor to start a fresh one).
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import { openBlobStore } from "../../worker/adapters/blob-store.ts";
import { parseDevice } from "../../worker/engine/device.ts";
import { LuminetWorker } from "../../worker/main.ts";
import { BASE, createGatewayHarness, type GatewayHarness } from "../support/gateway-harness.ts";

let h: GatewayHarness;
let root: string;

beforeAll(async () => {
  h = await createGatewayHarness();
  root = mkdtempSync(join(tmpdir(), "luminet-engine-lost-"));
});
afterAll(async () => {
  await h.close();
  rmSync(root, { recursive: true, force: true });
});

it("drains and says so when its engine thread ends without being closed", async () => {
  const worker = await LuminetWorker.start({
    bus: h.workerBus,
    base: BASE,
    workerId: "doomed",
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
  });
  const live = async () => (await h.workerBus.liveHeartbeats(BASE)).map((beat) => beat.worker_id);
  expect(await live()).toContain("doomed");
  // As a crash in the thread would: it stops without close().
  const thread = (worker as unknown as { engine: { worker: { terminate(): Promise<number> } } }).engine;
  await thread.worker.terminate();
  expect((await worker.engineLost).message).toMatch(/engine thread exited/);
  expect(await live()).not.toContain("doomed");
});
