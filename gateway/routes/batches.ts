// The Batch API, on the caller's own org:
//   POST /v1/batches              {"input_file_id", "endpoint", "completion_window": "24h", "metadata"?}
//   GET  /v1/batches[?limit=&after=]
//   GET  /v1/batches/:id
//   POST /v1/batches/:id/cancel
// A batch is checked line by line when created and then run by the Node gateways' batch runners
// (gateway/batch-runner.ts); its answers come back as its output and error files (routes/files.ts).
import { Hono } from "hono";
import { BatchCreateRequest, ListQuery } from "../../schema/batch-api.ts";
import { batchNotFound, cancelBatch, createBatch, listBatches, loadBatch } from "../batches.ts";
import type { GatewayEnv } from "../context.ts";
import type { GatewayDeps } from "../deps.ts";
import { invalidBody } from "../errors.ts";
import { readBody } from "../request-body.ts";

export function batchRoutes(deps: GatewayDeps): Hono<GatewayEnv> {
  const routes = new Hono<GatewayEnv>();

  routes.post("/", async (c) => {
    const request = await readBody(c, BatchCreateRequest);
    const { orgId, keyId } = c.get("principal");
    const id = `batch_${deps.newRequestId()}`;
    const batch = await createBatch(deps.db, { orgId, keyId }, request, id, new Date(deps.now()));
    deps.batchLinesQueued.dispatchEvent(new Event("queued"));
    return c.json(batch);
  });

  routes.get("/", async (c) => {
    const query = ListQuery.safeParse(c.req.query());
    if (!query.success) throw invalidBody(query.error);
    const { limit, after } = query.data;
    return c.json(await listBatches(deps.db, c.get("principal").orgId, { limit, after: after ?? null }));
  });

  routes.get("/:id", async (c) => {
    const id = c.req.param("id");
    const batch = await loadBatch(deps.db, c.get("principal").orgId, id);
    if (!batch) throw batchNotFound(id);
    return c.json(batch);
  });

  routes.post("/:id/cancel", async (c) => {
    return c.json(
      await cancelBatch(deps.db, c.get("principal").orgId, c.req.param("id"), new Date(deps.now())),
    );
  });

  return routes;
}
