// GET /v1/storage: what the caller's org keeps (files, adapters, conversations) against its storage
// limits, for any of its keys (gateway/org-storage.ts; schema/storage-api.ts has the shape).
import type { Handler } from "hono";
import type { GatewayEnv } from "../context.ts";
import type { GatewayDeps } from "../deps.ts";
import { orgStorage } from "../org-storage.ts";

export function storageRoute(deps: GatewayDeps): Handler<GatewayEnv> {
  return async (c) => c.json(await orgStorage(deps, c.get("principal").orgId));
}
