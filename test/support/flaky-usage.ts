// A bus whose usage publishes fail, as they do while NATS is unreachable, for tests of what retries them.
import type { Bus } from "../../bus/bus.ts";
import type { UsageEvent } from "../../schema/wire.ts";

/**
 * Makes the bus's usage publishes fail while `down(attempt)` says so (attempt counts from 1); returns the
 * attempts made so far.
 */
export function failUsagePublishes(bus: Bus, down: (attempt: number) => boolean): () => number {
  let attempts = 0;
  const publish = bus.publishUsage.bind(bus);
  bus.publishUsage = (event: UsageEvent) => {
    attempts++;
    return down(attempts) ? Promise.reject(new Error("TimeoutError: the bus is down")) : publish(event);
  };
  return () => attempts;
}
