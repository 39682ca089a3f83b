// The meter's Prometheus series (prom-client): usage events by how their write ended, batches the database
// refused, how long a batch's transaction took, and the usage events stored in JetStream not billed yet
// (read at each scrape: the meter's lag). `luminet meter --metrics-port` serves them on a registry of their
// own; a meter inside a gateway (`luminet gateway --with-meter`, `luminet dev`) adds them to the gateway's.
import { Counter, Gauge, Histogram, Registry, register } from "prom-client";
import type { BatchOutcome } from "./usage-writer.ts";

export class MeterMetrics {
  readonly events: Counter<"outcome">;
  readonly writeFailures: Counter;
  readonly batchSeconds: Histogram;
  readonly unbilled: Gauge;
  #readUnbilled: (() => Promise<number>) | undefined;

  constructor(readonly registry: Registry = new Registry()) {
    const registers = [registry];
    this.events = new Counter({
      name: "luminet_meter_events_total",
      help: "Usage events a batch took, by outcome: billed (a row written), duplicate (its request already had one), held (no price for its base, or counts too large: delivered again later)",
      labelNames: ["outcome"],
      registers,
    });
    // Every outcome is a series from the start, so a rate over it reads 0 rather than nothing.
    for (const outcome of ["billed", "duplicate", "held"]) this.events.inc({ outcome }, 0);
    this.writeFailures = new Counter({
      name: "luminet_meter_write_failures_total",
      help: "Batches the database refused or could not take; their events wait in JetStream and come again",
      registers,
    });
    this.batchSeconds = new Histogram({
      name: "luminet_meter_batch_seconds",
      help: "Duration of one batch's transaction, committed or not",
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10],
      registers,
    });
    const read = () => this.#readUnbilled?.();
    this.unbilled = new Gauge({
      name: "luminet_usage_events_unbilled",
      help: "Usage events stored in JetStream and not yet billed (read at each scrape; the last value while NATS does not answer)",
      registers,
      async collect() {
        const count = await read()?.catch(() => undefined);
        if (count !== undefined) this.set(count);
      },
    });
  }

  /** Where luminet_usage_events_unbilled reads its value (Bus.usageBacklog). */
  watchUnbilled(read: () => Promise<number>): void {
    this.#readUnbilled = read;
  }

  /** A batch's transaction ended: committed with `outcome`, or refused (null). */
  observeBatch(outcome: BatchOutcome | null, seconds: number): void {
    this.batchSeconds.observe(seconds);
    if (outcome === null) {
      this.writeFailures.inc();
      return;
    }
    this.events.inc({ outcome: "billed" }, outcome.inserted);
    this.events.inc({ outcome: "duplicate" }, outcome.duplicates);
    this.events.inc({ outcome: "held" }, outcome.held.size);
  }
}

let gatewayMeterMetrics: MeterMetrics | undefined;

/** The series of a meter running inside a gateway, on its default registry: one set per process. */
export function meterMetricsOnGatewayRegistry(): MeterMetrics {
  gatewayMeterMetrics ??= new MeterMetrics(register);
  return gatewayMeterMetrics;
}
