// Which worker gets a request, from the workers' heartbeats (DESIGN.md, "Placement and routing"):
//  - an adapter resident on a worker scores by tier (slot > RAM > disk), minus a penalty for the worker's
//    load, so a hot adapter spreads to another worker once its own gets busy, up to `maxReplicas` workers;
//    among its replicas that score nearly the best, the org's rendezvous worker takes the request, so an
//    org's conversations and system prompts on the adapter meet in one worker's prefix cache;
//  - an adapter resident nowhere (or only on overloaded workers) is cold: it goes to the worker chosen by
//    rendezvous hashing among the least-loaded ones, so the same adapter keeps landing on the same worker
//    and its weights are loaded once;
//  - a base-only request goes to the worker its org's base-only requests go to (rendezvous on the org)
//    among the nearly least-loaded ones, so an org's shared prompt prefixes (its system prompt) meet in one
//    worker's prefix cache instead of being prefilled on every worker;
//  - when every worker has a backlog, the base's shared queue (`any`) lets whichever frees up first take it.
// Pure: it sees only heartbeats, so it is tested without a bus.
import { rendezvous } from "../core/rendezvous.ts";
import { ANY_WORKER, type WorkerHeartbeat } from "../schema/wire.ts";

export interface RoutingOptions {
  /** Residency worth, in units of load (one queued request = 1). */
  tierScores?: { slot: number; ram: number; disk: number };
  /** A running sequence costs this much load: it shares a batch, a queued request waits. */
  runningWeight?: number;
  /** Workers an adapter may be resident on before new requests stay on those. */
  maxReplicas?: number;
  /** For cold placement, workers within this much load of the least-loaded one are equally good. */
  coldSlack?: number;
  /**
   * For base-only requests, workers within this much load of the least-loaded one are equally good, and
   * for an adapter, its replicas within this much of the best score; the org's rendezvous worker among them
   * takes the request (prefix-cache affinity).
   */
  prefixSlack?: number;
  /** When even the best worker has this many queued requests, use the shared queue. */
  sharedQueueDepth?: number;
  /**
   * How long the chosen worker has to claim a request before a copy goes to the base's shared queue for
   * whichever worker frees up first (gateway/generation.ts). A worker claims as soon as it pulls, and it
   * pulls only with room to run, so this is time spent queued behind a full batch or a stalled process.
   */
  claimTimeoutMs?: number;
  /**
   * A run whose worker has streamed tokens and then sent nothing for this long, while that worker is
   * missing from the live heartbeats, ends as worker_lost (billed for what was delivered) rather than
   * waiting for another worker to take the request over, which a base's only worker never gets.
   */
  lostWorkerAfterMs?: number;
  /**
   * Ignore residency: every request goes to the least-loaded worker. The benchmark's baseline (what a
   * residency-blind load balancer does); never the default.
   */
  residencyBlind?: boolean;
}

export const routingDefaults: Required<RoutingOptions> = {
  tierScores: { slot: 16, ram: 12, disk: 8 },
  runningWeight: 0.25,
  maxReplicas: 4,
  coldSlack: 2,
  prefixSlack: 1,
  sharedQueueDepth: 16,
  claimTimeoutMs: 2_000,
  lostWorkerAfterMs: 10_000,
  residencyBlind: false,
};

export type Tier = "slot" | "ram" | "disk";

/** Where a worker holds an adapter, best tier first; a pin is resident in a slot. */
export function residency(heartbeat: WorkerHeartbeat, adapter: string): Tier | null {
  if (heartbeat.adapters.slot.includes(adapter) || heartbeat.pins.includes(adapter)) return "slot";
  if (heartbeat.adapters.ram.includes(adapter)) return "ram";
  if (heartbeat.adapters.disk.includes(adapter)) return "disk";
  return null;
}

export function load(heartbeat: WorkerHeartbeat, runningWeight = routingDefaults.runningWeight): number {
  return heartbeat.queue_depth + heartbeat.running * runningWeight;
}

/**
 * How a request was placed, for `luminet_route_total`: on a worker holding the adapter in a slot
 * ("resident"; base-only requests count here too), in RAM, on disk, on a worker that must load it
 * ("cold"), or on the base's shared queue ("fallback").
 */
export type RouteOutcome = "resident" | "ram" | "disk" | "cold" | "fallback";

export interface RouteDecision {
  /** The worker id to publish to, or ANY_WORKER for the shared queue. */
  workerId: string;
  outcome: RouteOutcome;
}

const tierOutcome: Record<Tier, RouteOutcome> = { slot: "resident", ram: "ram", disk: "disk" };

/**
 * The worker id to publish to, ANY_WORKER for the shared queue, or null when no worker serves the base.
 * `adapter` is the exact adapter name (null for the base model alone); `key` places base-only requests and
 * picks among an adapter's nearly best replicas (the gateway passes the caller's org: prefix-cache
 * affinity) and, when routing is residency-blind, spreads the rest (the gateway passes the request id).
 */
export function chooseWorker(
  heartbeats: readonly WorkerHeartbeat[],
  adapter: string | null,
  key: string,
  options: RoutingOptions = {},
): string | null {
  return routeRequest(heartbeats, adapter, key, options)?.workerId ?? null;
}

/** chooseWorker with the reason for its choice; null when no worker serves the base. */
export function routeRequest(
  heartbeats: readonly WorkerHeartbeat[],
  adapter: string | null,
  key: string,
  options: RoutingOptions = {},
): RouteDecision | null {
  if (heartbeats.length === 0) return null;
  const o = { ...routingDefaults, ...options };
  const loadOf = (w: WorkerHeartbeat) => load(w, o.runningWeight);
  const minLoad = Math.min(...heartbeats.map(loadOf));
  const leastLoaded = heartbeats.filter((w) => loadOf(w) <= minLoad + o.coldSlack);
  const minQueue = Math.min(...heartbeats.map((w) => w.queue_depth));
  if (minQueue >= o.sharedQueueDepth) return { workerId: ANY_WORKER, outcome: "fallback" };
  const placed = (worker: WorkerHeartbeat): RouteDecision => {
    const tier = adapter === null ? "slot" : residency(worker, adapter);
    return { workerId: worker.worker_id, outcome: tier ? tierOutcome[tier] : "cold" };
  };

  if (adapter === null || o.residencyBlind) {
    const slack = o.residencyBlind ? 0 : o.prefixSlack;
    return placed(
      rendezvous(
        key,
        heartbeats.filter((w) => loadOf(w) <= minLoad + slack),
      )!,
    );
  }

  const resident = heartbeats.flatMap((w) => {
    const tier = residency(w, adapter);
    return tier ? [{ worker: w, score: o.tierScores[tier] - loadOf(w) }] : [];
  });
  const coldScore = -minLoad;
  const bestScore = Math.max(...resident.map((r) => r.score));
  if (resident.length > 0 && (bestScore >= coldScore || resident.length >= o.maxReplicas)) {
    const nearlyBest = resident.filter((r) => r.score >= bestScore - o.prefixSlack);
    return placed(
      rendezvous(
        key,
        nearlyBest.map((r) => r.worker),
      )!,
    );
  }
  // Cold: prefer workers with a free slot, so loading this adapter evicts nothing.
  const roomy = leastLoaded.filter((w) => w.free_slots > 0);
  return placed(rendezvous(adapter, roomy.length > 0 ? roomy : leastLoaded)!);
}
