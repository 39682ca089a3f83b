// Gateway metrics that record nothing, with the series a test watches overridden: one place that knows
// every method of GatewayMetrics, so a new series does not touch every test that counts one.
import type { GatewayMetrics } from "../../gateway/deps.ts";

export function quietMetrics(overrides: Partial<GatewayMetrics> = {}): GatewayMetrics {
  return {
    observe() {},
    added() {},
    routed() {},
    inFlight() {},
    desiredWorkers() {},
    batchLinesWaiting() {},
    coldStart() {},
    tokens() {},
    batchLine() {},
    batchEnded() {},
    ...overrides,
  };
}
