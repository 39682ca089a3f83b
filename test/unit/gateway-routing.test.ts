// Routing from heartbeats: residency beats load up to a point, hot adapters spread to a bound, cold
// adapters land on a stable worker among the least loaded, and the shared queue takes over when every
// worker has a backlog; a burst between two heartbeats spreads, counting what was sent since each beat.
// Plus how model ids split into base and adapter.
import { describe, expect, it } from "vitest";
import { rendezvous } from "../../core/rendezvous.ts";
import { formatModelId, parseModelId } from "../../gateway/model-id.ts";
import { RecentRoutes } from "../../gateway/recent-routes.ts";
import { chooseWorker, residency } from "../../gateway/routing.ts";
import { ANY_WORKER } from "../../schema/wire.ts";
import { idleHeartbeat } from "../support/heartbeats.ts";

const worker = idleHeartbeat;
const tiers = (slot: string[] = [], ram: string[] = [], disk: string[] = []) => ({
  adapters: { slot, ram, disk },
});

describe("a burst between heartbeats", () => {
  const beats = [worker("w1", { at: 900 }), worker("w2", { at: 900 })];
  const ends: (() => void)[] = [];
  const burst = (routes: RecentRoutes | null) => {
    const chosen: Record<string, number> = {};
    for (let i = 0; i < 8; i++) {
      const id = chooseWorker(routes?.withSentSinceBeat(beats) ?? beats, null, "acme")!;
      if (routes) ends.push(routes.sent(id));
      chosen[id] = (chosen[id] ?? 0) + 1;
    }
    return chosen;
  };

  it("lands on one idle worker when every request sees the same beats", () => {
    expect(Object.values(burst(null))).toEqual([8]);
  });

  it("spreads once what was sent since a worker's beat counts as queued there, until a later beat counts it", () => {
    let now = 1_000;
    const routes = new RecentRoutes(() => now);
    const spread = burst(routes);
    expect(Object.keys(spread).sort()).toEqual(["w1", "w2"]);
    expect(Math.abs(spread.w1! - spread.w2!)).toBeLessThanOrEqual(2);
    // Beats after the sends already count them (in their queue_depth): nothing is added twice.
    now = 2_000;
    const later = [worker("w1", { at: 1_500, queue_depth: 5 }), worker("w2", { at: 1_500, queue_depth: 3 })];
    expect(routes.withSentSinceBeat(later)).toEqual(later);
    // Ended before the next beat: they load no worker, so the org's next request finds its own again.
    for (const end of ends.splice(0)) end();
    expect(routes.withSentSinceBeat(beats)).toEqual(beats);
    expect(chooseWorker(routes.withSentSinceBeat(beats), null, "acme")).toBe(
      chooseWorker(beats, null, "acme"),
    );
  });
});

describe("chooseWorker", () => {
  it("has no answer without workers", () => {
    expect(chooseWorker([], "a", "r1")).toBeNull();
    expect(chooseWorker([], null, "r1")).toBeNull();
  });

  it("prefers the worker holding the adapter in a slot, then in RAM, then on disk", () => {
    const disk = worker("disk", tiers([], [], ["a"]));
    const ram = worker("ram", tiers([], ["a"]));
    const slot = worker("slot", tiers(["a"]));
    expect(chooseWorker([disk, ram, slot], "a", "r")).toBe("slot");
    expect(chooseWorker([disk, ram], "a", "r")).toBe("ram");
    expect(chooseWorker([worker("x"), disk], "a", "r")).toBe("disk");
  });

  it("counts a pin as resident in a slot", () => {
    expect(chooseWorker([worker("x"), worker("p", { pins: ["a"] })], "a", "r")).toBe("p");
    expect(residency(worker("p", { pins: ["a"] }), "a")).toBe("slot");
  });

  it("spreads a hot adapter to another worker once its own is busy enough", () => {
    const busy = worker("hot", { ...tiers(["a"]), queue_depth: 30 });
    const other = worker("other");
    expect(chooseWorker([busy, other], "a", "r")).toBe("other");
    expect(chooseWorker([{ ...busy, queue_depth: 3 }, other], "a", "r")).toBe("hot");
  });

  it("keeps a hot adapter on its replicas once it holds the maximum", () => {
    const replicas = ["w1", "w2"].map((id) => worker(id, { ...tiers(["a"]), queue_depth: 20 }));
    const idle = worker("idle");
    expect(chooseWorker([...replicas, idle], "a", "r", { maxReplicas: 2, sharedQueueDepth: 100 })).not.toBe(
      "idle",
    );
    expect(chooseWorker([...replicas, idle], "a", "r", { maxReplicas: 3, sharedQueueDepth: 100 })).toBe(
      "idle",
    );
  });

  it("sends a cold adapter to the same worker every time, whatever order the heartbeats come in", () => {
    const workers = ["w1", "w2", "w3", "w4"].map((id) => worker(id));
    const first = chooseWorker(workers, "cold", "r1");
    for (let i = 0; i < 10; i++) {
      const shuffled = [...workers].sort(() => Math.random() - 0.5);
      expect(chooseWorker(shuffled, "cold", `r${i}`)).toBe(first);
    }
  });

  it("spreads different cold adapters over the workers", () => {
    const workers = ["w1", "w2", "w3", "w4"].map((id) => worker(id));
    const chosen = new Set(Array.from({ length: 64 }, (_, i) => chooseWorker(workers, `adapter-${i}`, "r")));
    expect(chosen.size).toBe(4);
  });

  it("places a cold adapter among the least loaded, preferring a free slot", () => {
    const loaded = worker("loaded", { queue_depth: 10 });
    const full = worker("full", { free_slots: 0 });
    const roomy = worker("roomy");
    for (let i = 0; i < 20; i++) expect(chooseWorker([loaded, full, roomy], `a${i}`, "r")).toBe("roomy");
    expect(chooseWorker([loaded, full], "a", "r")).toBe("full");
  });

  it("only moving the chosen worker away moves a cold adapter (rendezvous)", () => {
    const workers = ["w1", "w2", "w3", "w4", "w5"].map((id) => worker(id));
    let moved = 0;
    for (let i = 0; i < 100; i++) {
      const before = rendezvous(`a${i}`, workers)!.worker_id;
      const after = rendezvous(`a${i}`, workers.slice(0, 4))!.worker_id;
      if (before !== after) {
        expect(before).toBe("w5");
        moved++;
      }
    }
    expect(moved).toBeGreaterThan(0);
  });

  it("sends base-only requests to the least loaded worker", () => {
    const busy = worker("busy", { running: 8 });
    const free = worker("free");
    expect(chooseWorker([busy, free], null, "r")).toBe("free");
  });

  it("keeps an org's base-only requests on one worker among the nearly least loaded, and spreads orgs", () => {
    const workers = ["w1", "w2", "w3", "w4"].map((id, i) => worker(id, { running: i % 2 }));
    // Loads 0, 0.25, 0, 0.25: all within the slack, so the org alone decides, whatever the order.
    const of = (org: string) => chooseWorker(workers, null, org);
    expect(of("acme")).toBe(rendezvous("acme", workers)!.worker_id);
    expect(chooseWorker([...workers].reverse(), null, "acme")).toBe(of("acme"));
    const orgs = Array.from({ length: 40 }, (_, i) => `org-${i}`);
    expect(new Set(orgs.map(of)).size).toBe(4);
    // Beyond the slack a worker takes no base-only request, whichever org it would be.
    const busy = workers.map((w) => (w.worker_id === of("acme") ? { ...w, queue_depth: 2 } : w));
    expect(chooseWorker(busy, null, "acme")).not.toBe(of("acme"));
    expect(chooseWorker(busy, null, "acme", { prefixSlack: 3 })).toBe(of("acme"));
  });

  it("keeps an org's requests for an adapter on one of its nearly best replicas, and spreads orgs", () => {
    const replicas = ["w1", "w2", "w3"].map((id, i) => worker(id, { ...tiers(["a"]), running: i % 2 }));
    const others = [worker("x"), worker("y", tiers([], ["a"]))];
    // Slot replicas at loads 0, 0.25, 0: all within the slack; the RAM copy and the idle worker score lower.
    const of = (org: string) => chooseWorker([...others, ...replicas], "a", org);
    expect(of("acme")).toBe(rendezvous("acme", replicas)!.worker_id);
    expect(chooseWorker([...replicas, ...others].reverse(), "a", "acme")).toBe(of("acme"));
    const orgs = Array.from({ length: 30 }, (_, i) => `org-${i}`);
    expect(new Set(orgs.map(of)).size).toBe(3);
    // A replica busier than the slack takes none, whichever org it would be.
    const busy = replicas.map((w) => (w.worker_id === of("acme") ? { ...w, queue_depth: 2 } : w));
    expect(chooseWorker([...others, ...busy], "a", "acme")).not.toBe(of("acme"));
  });

  it("uses the shared queue when every worker has a backlog", () => {
    const workers = ["w1", "w2"].map((id) => worker(id, { ...tiers(["a"]), queue_depth: 20 }));
    expect(chooseWorker(workers, "a", "r", { sharedQueueDepth: 16 })).toBe(ANY_WORKER);
    expect(chooseWorker(workers, null, "r", { sharedQueueDepth: 16 })).toBe(ANY_WORKER);
  });
});

describe("model ids", () => {
  it("splits base:org/adapter and keeps bare bases whole", () => {
    expect(parseModelId("llama:acme/support")).toEqual({
      base: "llama",
      adapter: { org: "acme", name: "support" },
    });
    expect(parseModelId("meta-llama/Llama-3.1-8B:acme/v3")).toEqual({
      base: "meta-llama/Llama-3.1-8B",
      adapter: { org: "acme", name: "v3" },
    });
    expect(parseModelId("meta-llama/Llama-3.1-8B")).toEqual({
      base: "meta-llama/Llama-3.1-8B",
      adapter: null,
    });
    expect(parseModelId("qwen2.5:7b")).toEqual({ base: "qwen2.5:7b", adapter: null });
    expect(parseModelId("base:acme/")).toEqual({ base: "base:acme/", adapter: null });
    expect(parseModelId("base:a/b/c")).toEqual({ base: "base:a/b/c", adapter: null });
  });

  it("formats what it parses", () => {
    for (const id of ["llama:acme/support", "meta/llama-4:org/x", "plain"]) {
      const parsed = parseModelId(id);
      expect(formatModelId(parsed.base, parsed.adapter)).toBe(id);
    }
  });
});
