// A worker whose engine thread ends on its own (a crash in it) stops serving: it drains — leaves the
// heartbeat bucket, so gateways route elsewhere and the base's other workers take its queue — and tells its
// owner (`luminet worker` then exits non-zero for its supervisor to start a fresh one).
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import { LuminetWorker } from "../../worker/main.ts";
import { BASE, createGatewayHarness, type GatewayHarness } from "../support/gateway-harness.ts";
import { tinyWorkerOptions } from "../support/tiny-worker.ts";

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
  const worker = await LuminetWorker.start(tinyWorkerOptions(h, root, { workerId: "doomed" }));
  const live = async () => (await h.workerBus.liveHeartbeats(BASE)).map((beat) => beat.worker_id);
  expect(await live()).toContain("doomed");
  // As a crash in the thread would: it stops without close().
  const thread = (worker as unknown as { engine: { worker: { terminate(): Promise<number> } } }).engine;
  await thread.worker.terminate();
  expect((await worker.engineLost).message).toMatch(/engine thread exited/);
  expect(await live()).not.toContain("doomed");
});
