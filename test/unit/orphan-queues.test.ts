// Which dead workers' queues a live worker takes over, and when it gives them back.
import { describe, expect, it } from "vitest";
import { WIRE_VERSION, type WorkerHeartbeat } from "../../schema/wire.ts";
import { OrphanQueues } from "../../worker/orphan-queues.ts";

function beat(worker_id: string): WorkerHeartbeat {
  return {
    v: WIRE_VERSION,
    worker_id,
    base: "tiny",
    version: "0.1.0",
    adapters: { slot: [], ram: [], disk: [] },
    pins: [],
    free_slots: 1,
    queue_depth: 0,
    running: 0,
    tokens_per_s: 0,
    at: Date.now(),
  };
}

function watcher() {
  const adopted: string[] = [];
  const released: string[] = [];
  const orphans = new OrphanQueues("me", async (id) => {
    adopted.push(id);
    return { close: async () => void released.push(id) };
  });
  return { orphans, adopted, released };
}

describe("orphan queues", () => {
  it("adopts the queue of a worker it saw beating once that worker stops, and only once", async () => {
    const { orphans, adopted } = watcher();
    orphans.observe([beat("me"), beat("w1"), beat("w2")]);
    expect(adopted).toEqual([]);
    orphans.observe([beat("me"), beat("w2")]);
    orphans.observe([beat("me"), beat("w2")]);
    expect(adopted).toEqual(["w1"]);
  });

  it("never adopts its own queue nor a worker it never saw", () => {
    const { orphans, adopted } = watcher();
    orphans.observe([beat("me")]);
    orphans.observe([]);
    expect(adopted).toEqual([]);
  });

  it("adopts the queue of a remembered worker that is not live, and not of one that is", () => {
    const { orphans, adopted } = watcher();
    orphans.remember(["gone", "w2", "me"]);
    orphans.observe([beat("me"), beat("w2")]);
    expect(adopted).toEqual(["gone"]);
  });

  it("gives the queue back when its worker beats again, and adopts it again if it dies again", async () => {
    const { orphans, adopted, released } = watcher();
    orphans.observe([beat("w1")]);
    orphans.observe([]);
    orphans.observe([beat("w1")]);
    await new Promise((resolve) => setImmediate(resolve));
    expect(released).toEqual(["w1"]);
    orphans.observe([]);
    expect(adopted).toEqual(["w1", "w1"]);
  });

  it("tries a failed adoption again at the next observe, until it takes", async () => {
    const attempts: string[] = [];
    const orphans = new OrphanQueues("me", async (id) => {
      attempts.push(id);
      if (attempts.length === 1) throw new Error("not connected to NATS (disconnected); reconnecting");
      return { close: async () => {} };
    });
    orphans.observe([beat("me"), beat("w1")]);
    orphans.observe([beat("me")]);
    await new Promise((resolve) => setImmediate(resolve));
    orphans.observe([beat("me")]);
    await new Promise((resolve) => setImmediate(resolve));
    orphans.observe([beat("me")]);
    expect(attempts).toEqual(["w1", "w1"]);
  });
});
