// OpenAI's `service_tier`. "flex" asks for a cheaper, slower answer on spare capacity, which is what a
// Batch API line gets: the request is marked as one (on the worker it queues behind live requests; it is
// billed at the base's batch price, `luminet bases set-price --batch-percent`). "priority" asks for the
// opposite: the worker admits it before queued live requests and gives its adapter a place first, and it is
// billed at the base's priority price (`--priority-percent`), where its org may use the tier
// (`luminet orgs set-priority`); elsewhere it runs at the standard tier, as OpenAI serves a project without
// priority processing. "auto" and "default" run at the standard tier. A Batch API line stays a batch line
// whatever tier its body names. As with OpenAI, the answer says the tier it was served at only when the
// request named one.
import type { Context } from "hono";
import type { ServiceTierIn } from "../schema/api.ts";
import type { GatewayEnv } from "./context.ts";
import type { GatewayDeps } from "./deps.ts";

/**
 * Marks a flex request as a batch line and a priority request as priority (where its org may use the tier),
 * and returns the field its answer carries: `{service_tier}` with the tier served when the request named
 * one, else nothing.
 */
export async function serveTier(
  c: Context<GatewayEnv>,
  deps: Pick<GatewayDeps, "db" | "callerLimits">,
  requested: ServiceTierIn | null | undefined,
): Promise<{ service_tier?: "default" | "flex" | "priority" }> {
  if (requested === "flex") c.set("batch", true);
  else if (requested === "priority" && c.get("batch") !== true) {
    const limits = await deps.callerLimits.get(deps.db, c.get("principal").keyId);
    if (limits.priorityTier) c.set("priority", true);
  }
  if (requested === null || requested === undefined) return {};
  return { service_tier: requested === "flex" ? "flex" : c.get("priority") ? "priority" : "default" };
}
