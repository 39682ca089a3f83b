// The heartbeat bucket is kept in memory, so a restarted nats-server comes back without it. Two buses on
// a server of the test's own, a worker's that beats and a gateway's that watches: after a restart the
// worker's heartbeats are stored again and the gateway sees the worker within seconds, with nothing else
// happening (no request, no consumer, that would make the streams again by the way).
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import type { Bus } from "../../bus/bus.ts";
import { connectJetStreamBus } from "../../bus/jetstream.ts";
import { sampleHeartbeat } from "../contract/wire-samples.ts";
import { createPrivateNats, type PrivateNats } from "../support/private-nats.ts";

let nats: PrivateNats;
let worker: Bus;
let gateway: Bus;
let beating: ReturnType<typeof setInterval> | undefined;

beforeAll(async () => {
  nats = await createPrivateNats();
  await nats.start();
  const options = { servers: nats.url, namespace: "hbrestart", heartbeatTtlMs: 3_000 };
  worker = await connectJetStreamBus(options);
  gateway = await connectJetStreamBus(options);
});

afterAll(async () => {
  clearInterval(beating);
  await worker?.close();
  await gateway?.close();
  await nats?.destroy();
});

describe("heartbeats across a nats-server restart", () => {
  it("are stored again and seen again within seconds: the bucket is made again", async () => {
    const heartbeat = sampleHeartbeat({ worker_id: "w1" });
    // A worker beats every second and carries on through failures, as worker/heartbeat.ts does.
    const beat = () => worker.putHeartbeat({ ...heartbeat, at: Date.now() }).catch(() => {});
    await beat();
    beating = setInterval(beat, 250);
    const seen = async () => (await gateway.liveHeartbeats(heartbeat.base)).map((h) => h.worker_id);
    await vi.waitFor(async () => expect(await seen()).toEqual(["w1"]), { timeout: 5_000 });

    await nats.stop();
    await new Promise((resolve) => setTimeout(resolve, 3_000));
    await nats.start();
    await vi.waitFor(async () => expect(await seen().catch(() => [])).toEqual(["w1"]), {
      timeout: 10_000,
      interval: 200,
    });
  });
});
