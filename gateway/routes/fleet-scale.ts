// GET /v1/fleet/scale (admin scope): per base served, the desired worker count and what it was computed
// from (gateway/fleet-scale.ts); each answer also sets `luminet_desired_workers{base}`. Optional `base`
// query parameter: one base only.
import type { Handler } from "hono";
import type { GatewayEnv } from "../context.ts";
import type { GatewayDeps } from "../deps.ts";
import { modelNotFound } from "../errors.ts";
import { readScaleSignals } from "../scale-signals.ts";

export function fleetScaleRoute(deps: GatewayDeps): Handler<GatewayEnv> {
  return async (c) => {
    const only = c.req.query("base");
    if (only !== undefined && !deps.bases.get(only)) throw modelNotFound(only, "base");
    const data = await readScaleSignals(deps, only === undefined ? undefined : [only]);
    return c.json({ object: "list", data });
  };
}
