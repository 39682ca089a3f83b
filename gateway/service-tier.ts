// OpenAI's `service_tier`. "flex" asks for a cheaper, slower answer on spare capacity, which is what a
// Batch API line gets: the request is marked as one (on the worker it queues behind live requests; it is
// billed at the base's batch price, `luminet bases set-price --batch-percent`). "auto", "default" and
// "priority" run at the standard tier (Luminet has no priority tier). As with OpenAI, the answer says the
// tier it was served at only when the request named one.
import type { Context } from "hono";
import type { ServiceTierIn } from "../schema/api.ts";
import type { GatewayEnv } from "./context.ts";

/**
 * Marks a flex request as a batch line, and returns the field its answer carries: `{service_tier}` with
 * the tier served when the request named one, else nothing.
 */
export function serveTier(
  c: Context<GatewayEnv>,
  requested: ServiceTierIn | null | undefined,
): { service_tier?: "default" | "flex" } {
  if (requested === "flex") c.set("batch", true);
  if (requested === null || requested === undefined) return {};
  return { service_tier: requested === "flex" ? "flex" : "default" };
}
