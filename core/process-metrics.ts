// The process's own Prometheus series — CPU seconds, resident memory, heap, event-loop lag, garbage
// collection pauses (prom-client's default metrics) — on the registry a process serves at /metrics, so an
// operator sees a gateway or worker saturating its core or pausing before its own series show it.
import { collectDefaultMetrics, type Registry } from "prom-client";

const collecting = new WeakSet<Registry>();

/** Adds the process series to `registry`, once however often it is called (`luminet dev` serves one registry). */
export function collectProcessMetrics(registry: Registry): void {
  if (collecting.has(registry)) return;
  collecting.add(registry);
  // Event-loop lag sampled every 10 ms (prom-client's default); its min/max/percentiles cover the time since
  // the previous scrape.
  collectDefaultMetrics({ register: registry });
}
