// How many workers each base needs, for an autoscaler (GET /v1/fleet/scale, `luminet_desired_workers`):
// the larger of what the request backlog needs in sequences and what the token rate needs in worker
// throughput. Pure: it sees the backlog and the heartbeats, so it is tested without a bus.
//  - The backlog (Bus.requestBacklog: queued plus running, since workers ack once a request finished)
//    divided by the sequences one worker runs at once: configured, or else the smallest --max-batch a live
//    worker reports (64 when none does). A base with a backlog and no worker gets one: that is scaling
//    from zero, while its requests wait in the queue.
//  - Where a worker's throughput is configured (tokens/s at full load, measured with `luminet bench`): the
//    tokens/s the base's workers report, divided by that throughput at the target utilization. Not guessed
//    from the rates workers report: those are what the traffic asks, not what a worker could do, so any
//    busy fleet would look short of workers and grow without end.
import type { WorkerHeartbeat } from "../schema/wire.ts";

export interface ScaleOptions {
  /** Sequences one worker runs at once; unset: the smallest max_batch a live worker reports, else 64. */
  sequencesPerWorker?: number;
  /** A worker's tokens/s at full load; unset: the token rate does not size the fleet. */
  tokensPerSecondPerWorker?: number;
  /** The share of a worker's sequences and tokens/s to plan for, leaving headroom for bursts. */
  targetUtilization?: number;
  minWorkers?: number;
  maxWorkers?: number;
}

export const scaleDefaults = {
  targetUtilization: 0.8,
  minWorkers: 0,
  maxWorkers: 64,
} satisfies Omit<Required<ScaleOptions>, "tokensPerSecondPerWorker" | "sequencesPerWorker">;

/** A worker's sequences when neither the options nor any live worker say: the worker's default --max-batch. */
export const DEFAULT_SEQUENCES_PER_WORKER = 64;

/**
 * What is wrong with configured bounds and headroom (0 ≤ min ≤ max, utilization in (0, 1]), named as the
 * caller names the settings (flags, env vars); null when nothing is.
 */
export function scaleOptionsProblem(
  o: Required<Pick<ScaleOptions, "minWorkers" | "maxWorkers" | "targetUtilization">>,
  names: { min: string; max: string; utilization: string },
  utilizationGiven: string,
): string | null {
  if (o.minWorkers > o.maxWorkers) {
    return `${names.min} (${o.minWorkers}) must not exceed ${names.max} (${o.maxWorkers})`;
  }
  if (!(o.targetUtilization > 0 && o.targetUtilization <= 1)) {
    return `${names.utilization} must be a number in (0, 1], got "${utilizationGiven}"`;
  }
  return null;
}

export interface ScaleSignal {
  base: string;
  /** Live workers now. */
  workers: number;
  desired_workers: number;
  /** Requests queued or running, not yet acked. */
  backlog: number;
  running: number;
  tokens_per_s: number;
  /** What one worker is planned to carry, after the target utilization; tokens/s null where not configured. */
  capacity: { sequences_per_worker: number; tokens_per_s_per_worker: number | null };
  /**
   * Lines of running batches not yet sent to a worker. They ride spare capacity (gateway/batch-room.ts)
   * and do not count towards desired_workers; an operator who wants batches drained faster scales on it.
   */
  batch_lines_waiting: number;
}

export function scaleSignal(
  base: string,
  backlog: number,
  heartbeats: readonly WorkerHeartbeat[],
  options: ScaleOptions = {},
  batchLinesWaiting = 0,
): ScaleSignal {
  const o = { ...scaleDefaults, ...options };
  const running = heartbeats.reduce((sum, h) => sum + h.running, 0);
  const tokensPerS = heartbeats.reduce((sum, h) => sum + h.tokens_per_s, 0);
  const workerTokens = o.tokensPerSecondPerWorker ?? null;
  const reported = heartbeats.flatMap((h) => (h.max_batch === undefined ? [] : [h.max_batch]));
  const perWorker =
    o.sequencesPerWorker ?? (reported.length > 0 ? Math.min(...reported) : DEFAULT_SEQUENCES_PER_WORKER);
  const sequences = perWorker * o.targetUtilization;
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
    batch_lines_waiting: batchLinesWaiting,
  };
}
