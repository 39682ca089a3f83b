// GET /v1/models and GET /v1/models/{model}: the bases and the caller's own adapters.
import type { Handler } from "hono";
import type { ModelCard, ModelList } from "../../schema/api.ts";
import type { GatewayEnv } from "../context.ts";
import type { GatewayDeps } from "../deps.ts";
import { modelNotFound } from "../errors.ts";
import { listModels } from "../models.ts";

export function listModelsRoute(deps: GatewayDeps): Handler<GatewayEnv> {
  return async (c) => {
    const list: ModelList = { object: "list", data: await listModels(deps, c.get("principal")) };
    return c.json(list);
  };
}

export function retrieveModelRoute(deps: GatewayDeps): Handler<GatewayEnv> {
  return async (c) => {
    const model = decodeURIComponent(c.req.param("model") ?? "");
    const card: ModelCard | undefined = (await listModels(deps, c.get("principal"))).find(
      (m) => m.id === model,
    );
    if (!card) throw modelNotFound(model);
    return c.json(card);
  };
}
