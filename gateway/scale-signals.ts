// The autoscaling signal of each base as of now: its request backlog and live heartbeats read from the bus,
// through scaleSignal (gateway/fleet-scale.ts). Each reading also sets `luminet_desired_workers{base}`.
// Read by GET /v1/fleet/scale and before every /metrics scrape, so the gauge is fresh when scraped.
import type { GatewayDeps } from "./deps.ts";
import { type ScaleSignal, scaleSignal } from "./fleet-scale.ts";

export function readScaleSignals(
  deps: Pick<GatewayDeps, "bus" | "bases" | "scale" | "metrics">,
  bases: readonly string[] = deps.bases.list().map((b) => b.name),
): Promise<ScaleSignal[]> {
  return Promise.all(
    bases.map(async (base) => {
      const [backlog, heartbeats] = await Promise.all([
        deps.bus.requestBacklog(base),
        deps.bus.liveHeartbeats(base),
      ]);
      const signal = scaleSignal(base, backlog, heartbeats, deps.scale);
      deps.metrics?.desiredWorkers(base, signal.desired_workers);
      return signal;
    }),
  );
}
