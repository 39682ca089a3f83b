// The worker's Prometheus series (prom-client), served with the process's own series by
// core/metrics-server.ts. The series live on a registry the caller may pass in: `luminet dev` puts them on
// the gateway's own registry.
import { Counter, Gauge, Histogram, Registry } from "prom-client";
import type { EvictTier, LoadTier, Whereabouts } from "./adapters/adapter-manager.ts";
import type { PrefixCacheStats } from "./engine/prefix-cache.ts";

export type SlotState = "free" | "used" | "pinned";

/** A request's service tier as the worker serves it: a Batch API line or flex request, or a priority one. */
export type ServedTier = "standard" | "batch" | "priority";

export class WorkerMetrics {
  readonly queueDepth: Gauge;
  readonly runningSequences: Gauge;
  readonly stepSeconds: Histogram;
  readonly tokensGenerated: Counter;
  readonly batchDistinctAdapters: Histogram;
  readonly preemptions: Counter;
  readonly timeToFirstToken: Histogram<"tier">;
  readonly adapterLoadSeconds: Histogram<"tier">;
  readonly adapterEvictions: Counter<"tier">;
  readonly adapterArrivals: Counter<"tier">;
  readonly usageEventsWaiting: Gauge;
  /** Read at each scrape: a heartbeat-driven gauge would freeze during the NATS outage it should show. */
  private usageEventsWaitingNow: () => number = () => 0;
  readonly slots: Gauge<"state">;
  readonly prefixCacheBytes: Gauge;
  readonly prefixTokensReused: Counter;
  private prefixTokensCounted = 0;

  constructor(readonly registry: Registry = new Registry()) {
    const registers = [registry];
    this.queueDepth = new Gauge({
      name: "luminet_queue_depth",
      help: "Requests this worker holds that have not started running",
      registers,
    });
    this.runningSequences = new Gauge({
      name: "luminet_running_sequences",
      help: "Sequences in the running batch",
      registers,
    });
    this.stepSeconds = new Histogram({
      name: "luminet_step_seconds",
      help: "Duration of one scheduler step (prefills and one decode)",
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers,
    });
    this.tokensGenerated = new Counter({
      name: "luminet_tokens_generated_total",
      help: "Tokens generated",
      registers,
    });
    this.batchDistinctAdapters = new Histogram({
      name: "luminet_batch_distinct_adapters",
      help: "Distinct adapters in one step (base-model rows count for none); one observation per step",
      buckets: [0, 1, 2, 4, 8, 16, 32, 64],
      registers,
    });
    this.preemptions = new Counter({
      name: "luminet_preemptions_total",
      help: "Running batch lines (Batch API, flex tier) taken out of the batch for live requests; each runs again later from where it stopped",
      registers,
    });
    this.timeToFirstToken = new Histogram({
      name: "luminet_time_to_first_token_seconds",
      help: "From the gateway's accepting a request (its created_at) to this worker's first token of it, by service tier: bus wait, queue, load and prefill",
      labelNames: ["tier"],
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
      registers,
    });
    this.adapterLoadSeconds = new Histogram({
      name: "luminet_adapter_load_seconds",
      help: "Adapter load time by the tier it came from (ram: into a slot; disk, blob: into RAM)",
      labelNames: ["tier"],
      buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 5],
      registers,
    });
    this.adapterEvictions = new Counter({
      name: "luminet_adapter_evictions_total",
      help: "Adapters evicted from a tier to make room",
      labelNames: ["tier"],
      registers,
    });
    this.adapterArrivals = new Counter({
      name: "luminet_adapter_arrivals_total",
      help: "Requests for an adapter by where it was on this worker when they arrived: slot, ram, disk, loading (for an earlier request), none (in the blob store only)",
      labelNames: ["tier"],
      registers,
    });
    const usageEventsWaiting = () => this.usageEventsWaitingNow();
    this.usageEventsWaiting = new Gauge({
      name: "luminet_usage_events_waiting",
      help: "Usage events not yet stored in JetStream: being sent, retried (NATS unreachable) or resent from the usage spool",
      registers,
      collect() {
        this.set(usageEventsWaiting());
      },
    });
    this.slots = new Gauge({
      name: "luminet_slots",
      help: "Adapter slots by state: free, used (unpinned adapter), pinned",
      labelNames: ["state"],
      registers,
    });
    this.prefixCacheBytes = new Gauge({
      name: "luminet_prefix_cache_bytes",
      help: "Bytes of earlier prompts' prefix caches the engine keeps (--prefix-cache-bytes)",
      registers,
    });
    this.prefixTokensReused = new Counter({
      name: "luminet_prefix_cache_reused_tokens_total",
      help: "Prompt tokens not prefilled because a stored prefix's cache covered them",
      registers,
    });
  }

  /** The engine's prefix cache as it last reported (PrefixCacheStats: reused tokens since it started). */
  setPrefixCache(stats: PrefixCacheStats): void {
    this.prefixCacheBytes.set(stats.bytes);
    this.prefixTokensReused.inc(stats.reusedTokens - this.prefixTokensCounted);
    this.prefixTokensCounted = stats.reusedTokens;
  }

  observeLoad(tier: LoadTier, seconds: number): void {
    this.adapterLoadSeconds.observe({ tier }, seconds);
  }

  /** A request's first token went out; `createdAt` is the gateway's clock (epoch ms). */
  observeFirstToken(tier: ServedTier, createdAt: number): void {
    this.timeToFirstToken.observe({ tier }, Math.max(0, Date.now() - createdAt) / 1000);
  }

  countArrival(tier: Whereabouts): void {
    this.adapterArrivals.inc({ tier });
  }

  /** Where luminet_usage_events_waiting reads its value. */
  watchUsageEvents(waiting: () => number): void {
    this.usageEventsWaitingNow = waiting;
  }

  countEviction(tier: EvictTier): void {
    this.adapterEvictions.inc({ tier });
  }

  setSlots(counts: Record<SlotState, number>): void {
    for (const [state, count] of Object.entries(counts)) this.slots.set({ state }, count);
  }
}
