// The process's own Prometheus series — CPU seconds, resident memory, heap, event-loop lag, garbage
// collection pauses (prom-client's default metrics) — on the registry a process serves at /metrics, so an
// operator sees a gateway or worker saturating its core or pausing before its own series show it.
import { collectDefaultMetrics, type Registry } from "prom-client";

const collecting = new WeakSet<Registry>();

/**
 * The event-loop lag series sample with a timer of this period (prom-client's default) and record the
 * whole period: an idle loop reads about 10 ms, so a stall is what lies above it.
 */
export const EVENT_LOOP_SAMPLE_MS = 10;

/** Adds the process series to `registry`, once however often it is called (`luminet dev` serves one registry). */
export function collectProcessMetrics(registry: Registry): void {
  if (collecting.has(registry)) return;
  collecting.add(registry);
  // The lag's min/max/percentiles cover the time since the previous scrape.
  collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: EVENT_LOOP_SAMPLE_MS });
}
