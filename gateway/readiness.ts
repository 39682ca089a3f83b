// GET /readyz: whether this gateway can serve now, for an orchestrator's readiness probe (no key needed).
// It can when it reaches its bus (the heartbeat view, which a gateway cut off NATS refuses) and its
// database (one `select 1`, given 2 s); otherwise 503 naming what it cannot reach, so a load balancer sends
// the traffic to gateways that can, while this one keeps answering the requests it gets with 503s of their
// own. /healthz stays the liveness probe: it answers whenever the process serves HTTP.
import { sql } from "drizzle-orm";
import type { Handler } from "hono";
import type { GatewayEnv } from "./context.ts";
import type { GatewayDeps } from "./deps.ts";
import { TIMED_OUT, within } from "./within.ts";

const WAIT_MS = 2_000;

async function reaches(check: () => Promise<unknown>, waitMs: number): Promise<boolean> {
  try {
    return (await within(check(), waitMs)) !== TIMED_OUT;
  } catch {
    return false;
  }
}

export function readinessRoute(deps: Pick<GatewayDeps, "bus" | "db">): Handler<GatewayEnv> {
  return async (c) => {
    const [bus, database] = await Promise.all([
      reaches(() => deps.bus.liveHeartbeats(), WAIT_MS),
      reaches(() => deps.db.execute(sql`select 1`), WAIT_MS),
    ]);
    const unavailable = [...(bus ? [] : ["bus"]), ...(database ? [] : ["database"])];
    return unavailable.length === 0 ? c.json({ ready: true }) : c.json({ ready: false, unavailable }, 503);
  };
}
