// The admin API's create, pin, unpin and delete reach real workers over the real NATS within a second: a
// gateway served over HTTP and two workers on the same JetStream namespace and blob folder; the adapter is
// uploaded through the API (the worker its first request will go to loads it at once), then pinned,
// unpinned and deleted, and each worker's own tiers are read after each call.
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import type { Bus } from "../../bus/bus.ts";
import { connectJetStreamBus } from "../../bus/jetstream.ts";
import { rendezvous } from "../../core/rendezvous.ts";
import { archiveSize, archiveStream } from "../../gateway/adapter-archive.ts";
import { type ServedApp, serveApp } from "../../gateway/node.ts";
import { NodeAdapterStorage } from "../../gateway/node-adapter-storage.ts";
import { routeRequest } from "../../gateway/routing.ts";
import { writeRandomAdapter } from "../../scripts/random-adapter.ts";
import { FolderBlobStore, openBlobStore } from "../../worker/adapters/blob-store.ts";
import { parseDevice } from "../../worker/engine/device.ts";
import { loadModelConfig } from "../../worker/engine/model-config.ts";
import { LuminetWorker } from "../../worker/main.ts";
import { BASE, createGatewayHarness, type GatewayHarness } from "../support/gateway-harness.ts";

const namespace = `controls_${process.pid}_${Date.now()}`;
const WIRE_NAME = "acme/support-v1";
/** The bound: a control event takes effect fleet-wide within a second of the API's answer. */
const FLEET_MS = 1000;

let root: string;
let createdAt: number;
let harness: GatewayHarness;
let served: ServedApp;
const buses: Bus[] = [];
const workers: LuminetWorker[] = [];

async function api(method: string, path: string, body?: unknown): Promise<Response> {
  const response = await fetch(`${served.url}${path}`, {
    method,
    headers: { authorization: `Bearer ${harness.keys.acmeAdmin}`, "content-type": "application/json" },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  expect(response.status, await response.clone().text()).toBeLessThan(300);
  return response;
}

/** Polls every worker until `holds` is true for all, failing once FLEET_MS have passed. */
async function everyWorker(what: string, holds: (w: LuminetWorker) => boolean): Promise<void> {
  const deadline = Date.now() + FLEET_MS;
  while (!workers.every(holds)) {
    if (Date.now() > deadline) {
      const state = workers.map((w) => ({ id: w.workerId, ...w.tiers() }));
      throw new Error(`not every worker ${what} within ${FLEET_MS} ms: ${JSON.stringify(state)}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

const resident = (w: LuminetWorker) => {
  const { slot, ram, disk } = w.tiers();
  return [...slot, ...ram, ...disk].includes(WIRE_NAME);
};

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), "luminet-controls-"));
  const blobsDir = join(root, "blobs");
  mkdirSync(blobsDir);
  const natsUrl = inject("natsUrl");
  const connect = async () => {
    const bus = await connectJetStreamBus({ servers: natsUrl, namespace });
    buses.push(bus);
    return bus;
  };
  harness = await createGatewayHarness();
  const app = harness.appWith({
    bus: await connect(),
    adapterStorage: new NodeAdapterStorage({
      blobs: new FolderBlobStore(blobsDir),
      maxRank: 8,
      maxBytes: 2 ** 20,
    }),
  });
  served = await serveApp(app, 0, "127.0.0.1");
  for (const id of ["a", "b"]) {
    workers.push(
      await LuminetWorker.start({
        bus: await connect(),
        base: BASE,
        workerId: id,
        modelDir: harness.modelDir,
        device: parseDevice("cpu"),
        slots: 4,
        maxAdaptersPerBatch: 4,
        maxRank: 8,
        maxBatch: 4,
        maxContext: 128,
        stepTokens: 128,
        ramCacheBytes: 2 ** 24,
        diskCacheDir: join(root, `cache-${id}`),
        diskCacheBytes: 2 ** 26,
        blobs: openBlobStore(blobsDir),
        ackWaitMs: 30_000,
        threads: 1,
      }),
    );
  }
  const source = join(root, "source");
  mkdirSync(source);
  writeRandomAdapter(source, loadModelConfig(harness.modelDir), { rank: 4, seed: 9 });
  const files = ["adapter_config.json", "adapter_model.safetensors"].map((name) => ({
    name,
    path: join(source, name),
  }));
  const created = await fetch(`${served.url}/v1/adapters?base=${BASE}&name=support-v1`, {
    method: "POST",
    headers: {
      authorization: `Bearer ${harness.keys.acmeAdmin}`,
      "content-type": "application/x-tar",
      "content-length": String(archiveSize(files)),
    },
    body: Readable.toWeb(archiveStream(files)) as ReadableStream<Uint8Array>,
    duplex: "half",
  } as RequestInit);
  expect(created.status, await created.clone().text()).toBe(201);
  createdAt = Date.now();
}, 120_000);

afterAll(async () => {
  for (const worker of workers) await worker.drain();
  await served?.close();
  for (const bus of buses) await bus.close();
  await harness?.close();
  rmSync(root, { recursive: true, force: true });
});

describe("adapter control events", () => {
  it("a create through the API has the worker its first request will go to load it, and only that one", async () => {
    const live = await buses[0]!.liveHeartbeats(BASE);
    const owner = rendezvous(WIRE_NAME, live)!.worker_id;
    const [staging, other] = [
      workers.find((w) => w.workerId === owner)!,
      workers.find((w) => w.workerId !== owner)!,
    ];
    const deadline = createdAt + FLEET_MS;
    while (!staging.tiers().ram.includes(WIRE_NAME)) {
      expect(
        Date.now(),
        `${owner} had not loaded the new adapter: ${JSON.stringify(staging.tiers())}`,
      ).toBeLessThan(deadline);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    expect(resident(other)).toBe(false);
    // The gateway now routes it there as held in RAM, not as cold.
    await expect
      .poll(async () => routeRequest(await buses[0]!.liveHeartbeats(BASE), WIRE_NAME, "r1"), {
        timeout: 3000,
      })
      .toEqual({ workerId: owner, outcome: "ram" });
  });

  it("a pin through the API makes the adapter pinned and resident on every worker within a second", async () => {
    await api("PATCH", "/v1/adapters/acme/support-v1", { pinned: true });
    await everyWorker("pinned it", (w) => w.tiers().pinned.includes(WIRE_NAME));
    await everyWorker("holds it in a slot", (w) => w.tiers().slot.includes(WIRE_NAME));
    const listed = (await (await api("GET", "/v1/adapters")).json()) as {
      data: { name: string; pinned: boolean }[];
    };
    expect(listed.data).toMatchObject([{ name: "support-v1", pinned: true }]);
  });

  it("an unpin through the API releases the pin on every worker within a second", async () => {
    await api("PATCH", "/v1/adapters/acme/support-v1", { pinned: false });
    await everyWorker("unpinned it", (w) => !w.tiers().pinned.includes(WIRE_NAME));
    expect(workers.every(resident)).toBe(true);
  });

  it("a delete through the API evicts the adapter from every tier of every worker within a second", async () => {
    await api("DELETE", "/v1/adapters/acme/support-v1");
    await everyWorker("evicted it", (w) => !resident(w));
  });
});
