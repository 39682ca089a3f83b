// The worker's own series that are read at scrape time rather than set as events happen.
import { describe, expect, it } from "vitest";
import { WorkerMetrics } from "../../worker/metrics.ts";

describe("WorkerMetrics", () => {
  it("reads the usage events waiting at each scrape, so an outage shows while heartbeats cannot go out", async () => {
    const metrics = new WorkerMetrics();
    let waiting = 0;
    metrics.watchUsageEvents(() => waiting);
    expect(await metrics.registry.metrics()).toMatch(/^luminet_usage_events_waiting 0$/m);
    waiting = 7;
    expect(await metrics.registry.metrics()).toMatch(/^luminet_usage_events_waiting 7$/m);
  });
});
