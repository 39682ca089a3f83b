// The worker's heartbeat on the in-process bus: what it stores, tokens/s between beats, and none while the
// worker cannot take requests.
import { afterEach, describe, expect, it, vi } from "vitest";
import type { Bus } from "../../bus/bus.ts";
import { InProcessBroker } from "../../bus/in-process.ts";
import { Heartbeat, type WorkerState } from "../../worker/heartbeat.ts";

const state = (tokensGenerated: number): WorkerState => ({
  worker_id: "w1",
  base: "tiny",
  version: "0.1.0",
  adapters: { slot: ["acme/a"], ram: ["acme/b"], disk: [] },
  pins: ["acme/a"],
  free_slots: 3,
  queue_depth: 2,
  running: 1,
  tokensGenerated,
});

/** An in-process bus whose every heartbeat put first runs `before` (which may wait, or throw as NATS would). */
function busBeforePuts(before: () => Promise<void>): Bus {
  const bus = new InProcessBroker().connect();
  return new Proxy(bus, {
    get(target, key) {
      if (key === "putHeartbeat") {
        return async (beat: Parameters<Bus["putHeartbeat"]>[0]) => {
          await before();
          return target.putHeartbeat(beat);
        };
      }
      const value = Reflect.get(target, key, target) as unknown;
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

let stop: (() => Promise<void>) | undefined;
afterEach(async () => {
  await stop?.();
});

describe("heartbeat", () => {
  it("stores the worker's state at start and beats until stopped", async () => {
    const bus = new InProcessBroker().connect();
    const heartbeat = new Heartbeat(bus, () => state(0), 20);
    stop = () => heartbeat.stop();
    await heartbeat.start();
    const [stored] = await bus.liveHeartbeats("tiny");
    expect(stored).toMatchObject({
      worker_id: "w1",
      pins: ["acme/a"],
      free_slots: 3,
      queue_depth: 2,
      running: 1,
    });
    const first = stored!.at;
    await new Promise((resolve) => setTimeout(resolve, 60));
    const [later] = await bus.liveHeartbeats("tiny");
    expect(later!.at).toBeGreaterThan(first);
  });

  it("skips beats while one is still being stored, so a stop after an outage waits for that one only", async () => {
    let puts = 0;
    let outage: Promise<void> | null = null;
    let restore = () => {};
    const slow = busBeforePuts(async () => {
      puts++;
      await outage;
    });
    const heartbeat = new Heartbeat(slow, () => state(0), 10);
    stop = () => heartbeat.stop();
    await heartbeat.start();
    // NATS stops answering for twenty beats' time.
    outage = new Promise((resolve) => {
      restore = resolve;
    });
    await new Promise((resolve) => setTimeout(resolve, 200));
    restore();
    await heartbeat.stop();
    // The first beat, the one the outage held, and at most one more between the outage's end and the stop.
    expect(puts).toBeLessThanOrEqual(3);
  });

  it("says why while its beats cannot be stored, and nothing once they are again", async () => {
    let down = false;
    const flaky = busBeforePuts(async () => {
      if (down) throw new Error("NATS is not connected");
    });
    const heartbeat = new Heartbeat(flaky, () => state(0), 10);
    stop = () => heartbeat.stop();
    await heartbeat.start();
    expect(heartbeat.problem).toBeNull();
    down = true;
    await vi.waitFor(() => expect(heartbeat.problem).toBe("cannot store heartbeats: NATS is not connected"));
    down = false;
    await vi.waitFor(() => expect(heartbeat.problem).toBeNull());
  });

  it("reports tokens per second from the tokens generated between two beats", async () => {
    let tokens = 0;
    const heartbeat = new Heartbeat(new InProcessBroker().connect(), () => state(tokens));
    expect(heartbeat.snapshot().tokens_per_s).toBe(0);
    // 50 ms on the heartbeat's own clock (Date.now): a 50 ms timer can end 49 whole milliseconds later.
    const after = Date.now();
    while (Date.now() - after < 50) await new Promise((resolve) => setTimeout(resolve, 5));
    tokens = 500;
    const { tokens_per_s } = heartbeat.snapshot();
    // At least 50 ms passed between the two snapshots.
    expect(tokens_per_s).toBeGreaterThan(0);
    expect(tokens_per_s).toBeLessThanOrEqual(500 / 0.05);
    expect(heartbeat.snapshot().tokens_per_s).toBe(0);
  });

  it("leaves the live heartbeats at once and puts none while the worker is not ready, then beats again", async () => {
    const bus = new InProcessBroker().connect();
    let notReady: string | null = null;
    const heartbeat = new Heartbeat(
      bus,
      () => state(0),
      20,
      undefined,
      () => notReady,
    );
    stop = () => heartbeat.stop();
    await heartbeat.start();
    expect(await bus.liveHeartbeats("tiny")).toHaveLength(1);
    notReady = "cannot pull requests";
    await new Promise((resolve) => setTimeout(resolve, 60));
    expect(await bus.liveHeartbeats("tiny")).toEqual([]);
    notReady = null;
    await new Promise((resolve) => setTimeout(resolve, 60));
    expect(await bus.liveHeartbeats("tiny")).toHaveLength(1);
  });
});
