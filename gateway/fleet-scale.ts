// How many workers each base needs, for an autoscaler (GET /v1/fleet/scale, `luminet_desired_workers`):
// the larger of what the request backlog needs in sequences and what the token rate needs in worker
// throughput. Pure: it sees the backlog and the heartbeats, so it is tested without a bus.
//  - The backlog (Bus.requestBacklog: queued plus running, since workers ack once a request finished)
//    divided by the sequences one worker runs at once. A base with a backlog and no worker gets one:
//    that is scaling from zero, while its requests wait in the queue.
//  - The tokens/s the base's workers report, divided by a worker's throughput at the target utilization.
//    A worker's throughput is configured, or else the best any live worker of the base has reported.
import type { WorkerHeartbeat } from "../schema/wire.ts";

export interface ScaleOptions {
  /** Sequences one worker runs at once (the worker's --max-batch). */
  sequencesPerWorker?: number;
  /** A worker's tokens/s at full load; unset: the highest tokens_per_s a live worker reported. */
  tokensPerSecondPerWorker?: number;
  /** The share of a worker's sequences and tokens/s to plan for, leaving headroom for bursts. */
  targetUtilization?: number;
  minWorkers?: number;
  maxWorkers?: number;
}

export const scaleDefaults = {
  sequencesPerWorker: 64,
  targetUtilization: 0.8,
  minWorkers: 0,
  maxWorkers: 64,
} satisfies Omit<Required<ScaleOptions>, "tokensPerSecondPerWorker">;

export interface ScaleSignal {
  base: string;
  /** Live workers now. */
  workers: number;
  desired_workers: number;
  /** Requests queued or running, not yet acked. */
  backlog: number;
  running: number;
  tokens_per_s: number;
  /** What one worker is planned to carry, after the target utilization. */
  capacity: { sequences_per_worker: number; tokens_per_s_per_worker: number | null };
}

export function scaleSignal(
  base: string,
  backlog: number,
  heartbeats: readonly WorkerHeartbeat[],
  options: ScaleOptions = {},
): ScaleSignal {
  const o = { ...scaleDefaults, ...options };
  const running = heartbeats.reduce((sum, h) => sum + h.running, 0);
  const tokensPerS = heartbeats.reduce((sum, h) => sum + h.tokens_per_s, 0);
  const observedPeak = Math.max(0, ...heartbeats.map((h) => h.tokens_per_s));
  const workerTokens = o.tokensPerSecondPerWorker ?? (observedPeak > 0 ? observedPeak : null);
  const sequences = o.sequencesPerWorker * o.targetUtilization;
  const tokens = workerTokens === null ? null : workerTokens * o.targetUtilization;

  // Running sequences are in the backlog already; the heartbeats' count covers a bus that lags them.
  const bySequences = Math.ceil(Math.max(backlog, running) / sequences);
  const byTokens = tokens === null ? 0 : Math.ceil(tokensPerS / tokens);
  const desired = Math.min(o.maxWorkers, Math.max(o.minWorkers, bySequences, byTokens));
  return {
    base,
    workers: heartbeats.length,
    desired_workers: desired,
    backlog,
    running,
    tokens_per_s: tokensPerS,
    capacity: { sequences_per_worker: sequences, tokens_per_s_per_worker: tokens },
  };
}
