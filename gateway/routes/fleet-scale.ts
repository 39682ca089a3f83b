// GET /v1/fleet/scale (admin scope): per base served, the desired worker count and what it was computed
// from (gateway/fleet-scale.ts); each answer also sets `luminet_desired_workers{base}`. Optional `base`
// query parameter: one base only.
import type { Handler } from "hono";
import type { GatewayEnv } from "../context.ts";
import type { GatewayDeps } from "../deps.ts";
import { modelNotFound } from "../errors.ts";
import { scaleSignal } from "../fleet-scale.ts";

export function fleetScaleRoute(deps: GatewayDeps): Handler<GatewayEnv> {
  return async (c) => {
    const only = c.req.query("base");
    const bases = deps.bases.list().map((b) => b.name);
    if (only !== undefined && !bases.includes(only)) throw modelNotFound(only);
    const data = await Promise.all(
      (only === undefined ? bases : [only]).map(async (base) => {
        const [backlog, heartbeats] = await Promise.all([
          deps.bus.requestBacklog(base),
          deps.bus.liveHeartbeats(base),
        ]);
        const signal = scaleSignal(base, backlog, heartbeats, deps.scale);
        deps.metrics?.desiredWorkers(base, signal.desired_workers);
        return signal;
      }),
    );
    return c.json({ object: "list", data });
  };
}
