// An open-loop load generator: requests start on a fixed schedule (request i at start + i / rate), whether
// or not earlier ones have finished, so a slow server meets the same offered load instead of a politely
// slowed client (a closed loop's "coordinated omission"). Latency is timed from each request's start; how
// late the starts ran behind the schedule is kept too, and says whether the generator kept up.
import { percentile, round } from "./bench-stats.ts";

export interface OpenLoopRun {
  /** Requests per second offered. */
  offered_per_s: number;
  /** Requests completed per second, first start to last completion. */
  completed_per_s: number;
  requests: number;
  errors: number;
  /** The first error's message, when there were errors. */
  first_error?: string;
  latency_ms: { p50: number; p99: number; max: number };
  /** How far behind the schedule the 99th-percentile start ran. */
  start_lag_ms_p99: number;
}

export interface OpenLoopOptions {
  /** Requests per second. */
  rate: number;
  seconds: number;
  /** Sends one request and resolves once its whole answer arrived; rejects on an error answer. */
  send: () => Promise<void>;
}

export async function openLoop(options: OpenLoopOptions): Promise<OpenLoopRun> {
  const { rate, send } = options;
  const total = Math.max(1, Math.round(rate * options.seconds));
  const latencies: number[] = [];
  const lags: number[] = [];
  const inFlight: Promise<void>[] = [];
  let errors = 0;
  let firstError: string | undefined;
  let lastDone = 0;
  const started = performance.now();
  const scheduled = (i: number) => started + (i * 1000) / rate;
  await new Promise<void>((resolve) => {
    let sent = 0;
    const tick = () => {
      for (; sent < total && scheduled(sent) <= performance.now(); sent++) {
        const at = performance.now();
        lags.push(at - scheduled(sent));
        inFlight.push(
          send().then(
            () => {
              lastDone = performance.now();
              latencies.push(lastDone - at);
            },
            (error: unknown) => {
              lastDone = performance.now();
              errors++;
              firstError ??= error instanceof Error ? error.message : String(error);
            },
          ),
        );
      }
      if (sent < total) setTimeout(tick, Math.max(0, scheduled(sent) - performance.now()));
      else resolve();
    };
    tick();
  });
  await Promise.all(inFlight);
  const ms = (value: number) => round(value, 3);
  return {
    offered_per_s: rate,
    completed_per_s: round((latencies.length / (lastDone - started)) * 1000, 1),
    requests: total,
    errors,
    ...(firstError === undefined ? {} : { first_error: firstError }),
    latency_ms: {
      p50: ms(percentile(latencies, 50)),
      p99: ms(percentile(latencies, 99)),
      max: ms(latencies.reduce((a, b) => Math.max(a, b), 0)),
    },
    start_lag_ms_p99: ms(percentile(lags, 99)),
  };
}
