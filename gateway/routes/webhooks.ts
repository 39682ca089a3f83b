// The webhook admin API, for keys with the "admin" scope, always on the caller's own org:
//   POST   /v1/webhooks        {"url", "events"?} → 201: the endpoint plus `secret`, its signing secret,
//                              which is never shown again
//   GET    /v1/webhooks        the org's endpoints, oldest first
//   DELETE /v1/webhooks/:id    deletes one, with what it had not been sent
// Its events (the end of a batch or a background response) are signed and delivered by the Node gateways
// (gateway/webhook-sender.ts). A URL naming this host or a private address is refused unless the operator
// allows private webhooks.
import { Hono } from "hono";
import type { WebhookDeleted } from "../../schema/webhook-api.ts";
import { WebhookCreate } from "../../schema/webhook-api.ts";
import { ADMIN_SCOPE } from "../api-keys.ts";
import { callerOrgOnly, requireScope } from "../auth.ts";
import type { GatewayEnv } from "../context.ts";
import type { GatewayDeps } from "../deps.ts";
import { ApiError } from "../errors.ts";
import { readBody } from "../request-body.ts";
import { createWebhook, deleteWebhook, listWebhooks } from "../webhooks.ts";

export function webhookRoutes(deps: GatewayDeps): Hono<GatewayEnv> {
  const routes = new Hono<GatewayEnv>();
  routes.use("*", requireScope(ADMIN_SCOPE), callerOrgOnly);

  routes.post("/", async (c) => {
    const body = await readBody(c, WebhookCreate);
    const created = await createWebhook(deps, c.get("principal").orgId, body);
    return c.json(created, 201);
  });

  routes.get("/", async (c) =>
    c.json({ object: "list", data: await listWebhooks(deps.db, c.get("principal").orgId) }),
  );

  routes.delete("/:id", async (c) => {
    const id = c.req.param("id");
    if (!(await deleteWebhook(deps.db, c.get("principal").orgId, id))) {
      throw new ApiError(
        404,
        "invalid_request_error",
        `No webhook endpoint '${id}' in this org.`,
        "not_found",
        "id",
      );
    }
    const deleted: WebhookDeleted = { id, object: "webhook_endpoint.deleted", deleted: true };
    return c.json(deleted);
  });

  return routes;
}
