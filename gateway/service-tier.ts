// OpenAI's `service_tier`. "flex" asks for a cheaper, slower answer on spare capacity, which is what a
// Batch API line gets: the request is marked as one (on the worker it queues behind live requests; it is
// billed at the base's batch price, `luminet bases set-price --batch-percent`). "priority" asks for the
// opposite: the worker admits it before queued live requests and gives its adapter a place first, and it is
// billed at the base's priority price (`--priority-percent`). "auto" and "default" run at the standard tier.
// A Batch API line stays a batch line whatever tier its body names. As with OpenAI, the answer says the
// tier it was served at only when the request named one.
import type { Context } from "hono";
import type { ServiceTierIn } from "../schema/api.ts";
import type { GatewayEnv } from "./context.ts";

/**
 * Marks a flex request as a batch line and a priority request as priority, and returns the field its answer
 * carries: `{service_tier}` with the tier served when the request named one, else nothing.
 */
export function serveTier(
  c: Context<GatewayEnv>,
  requested: ServiceTierIn | null | undefined,
): { service_tier?: "default" | "flex" | "priority" } {
  if (requested === "flex") c.set("batch", true);
  else if (requested === "priority" && c.get("batch") !== true) c.set("priority", true);
  if (requested === null || requested === undefined) return {};
  return { service_tier: requested === "flex" ? "flex" : c.get("priority") ? "priority" : "default" };
}
