// GET /v1/models and GET /v1/models/{model}: the bases and the caller's own adapters. DELETE
// /v1/models/{model}, as OpenAI deletes a fine-tuned model: an admin key deletes one of its org's adapters
// by its model id (as DELETE /v1/adapters/{name} without force); a base model cannot be deleted, nor an
// alias (its versions are the adapters).

import { and, eq, isNull } from "drizzle-orm";
import type { Handler } from "hono";
import type { ModelCard, ModelList } from "../../schema/api.ts";
import { adapters } from "../../schema/db.ts";
import { deleteAdapter } from "../adapter-admin.ts";
import type { GatewayEnv } from "../context.ts";
import type { GatewayDeps } from "../deps.ts";
import { invalidRequest, modelNotFound, permissionDenied } from "../errors.ts";
import { parseModelId } from "../model-id.ts";
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

export function deleteModelRoute(deps: GatewayDeps): Handler<GatewayEnv> {
  return async (c) => {
    const model = decodeURIComponent(c.req.param("model") ?? "");
    const caller = c.get("principal");
    const card = (await listModels(deps, caller)).find((m) => m.id === model);
    if (!card) throw modelNotFound(model);
    const { base, adapter } = parseModelId(model);
    if (card.parent === null || !adapter) {
      throw permissionDenied(`\`${model}\` is a base model: only your org's adapters can be deleted.`);
    }
    const [version] = await deps.db
      .select({ name: adapters.name })
      .from(adapters)
      .where(
        and(
          eq(adapters.orgId, caller.orgId),
          eq(adapters.base, base),
          eq(adapters.name, adapter.name),
          isNull(adapters.deletedAt),
        ),
      );
    if (!version) {
      throw invalidRequest(
        `\`${model}\` is an alias; delete the adapters it names (DELETE /v1/adapters/{name}).`,
        "model",
      );
    }
    await deleteAdapter(deps, caller.orgId, adapter.name, false);
    deps.log.info({ adapter: `${caller.orgId}/${adapter.name}` }, "adapter deleted");
    return c.json({ id: model, object: "model", deleted: true });
  };
}
