// The autoscaling signal of each base as of now: its request backlog and live heartbeats read from the bus,
// through scaleSignal (gateway/fleet-scale.ts), beside the batch lines waiting for it in the database. Each
// reading also sets `luminet_desired_workers{base}`, `luminet_live_workers{base}` and
// `luminet_batch_lines_waiting{base}`.
// Read by GET /v1/fleet/scale and before every /metrics scrape, so the gauge is fresh when scraped; a
// reading that fails sets `luminet_scale_signal_stale`, one that succeeds clears it.
import { batchLinesWaiting } from "./batches.ts";
import type { GatewayDeps } from "./deps.ts";
import { type ScaleSignal, scaleSignal } from "./fleet-scale.ts";

export async function readScaleSignals(
  deps: Pick<GatewayDeps, "bus" | "db" | "bases" | "scale" | "metrics">,
  bases: readonly string[] = deps.bases.list().map((b) => b.name),
): Promise<ScaleSignal[]> {
  try {
    const signals = await readEach(deps, bases);
    deps.metrics?.scaleSignalStale(false);
    return signals;
  } catch (error) {
    // The gauges keep their last values; luminet_scale_signal_stale says they are not current.
    deps.metrics?.scaleSignalStale(true);
    throw error;
  }
}

async function readEach(
  deps: Pick<GatewayDeps, "bus" | "db" | "bases" | "scale" | "metrics">,
  bases: readonly string[],
): Promise<ScaleSignal[]> {
  const waiting = await batchLinesWaiting(deps.db);
  return Promise.all(
    bases.map(async (base) => {
      const [backlog, heartbeats] = await Promise.all([
        deps.bus.requestBacklog(base),
        deps.bus.liveHeartbeats(base),
      ]);
      const signal = scaleSignal(base, backlog, heartbeats, deps.scale, waiting.get(base) ?? 0);
      deps.metrics?.desiredWorkers(base, signal.desired_workers);
      deps.metrics?.liveWorkers(base, signal.workers);
      deps.metrics?.batchLinesWaiting(base, signal.batch_lines_waiting);
      return signal;
    }),
  );
}
