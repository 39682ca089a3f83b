// Gateway metrics that record nothing, with the series a caller watches overridden (tests, the fleet
// benchmark's routing count): one place that knows every method of GatewayMetrics, so a new series does not
// touch every caller that counts one.
import type { GatewayMetrics } from "./deps.ts";

export function quietMetrics(overrides: Partial<GatewayMetrics> = {}): GatewayMetrics {
  return {
    observe() {},
    errorAnswered() {},
    added() {},
    routed() {},
    inFlight() {},
    desiredWorkers() {},
    liveWorkers() {},
    scaleSignalStale() {},
    batchLinesWaiting() {},
    coldStart() {},
    tokens() {},
    batchLine() {},
    batchEnded() {},
    webhookDelivery() {},
    ...overrides,
  };
}
