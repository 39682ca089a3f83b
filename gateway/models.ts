// The models a caller can name: every base this gateway serves, and the caller's own ready adapters and
// aliases on those bases as `base:org/name`. Resolving a model id to what runs checks the base is served
// and the adapter (or alias) is the caller's, with the same 404 for "unknown" and "someone else's".
import { and, eq, isNull } from "drizzle-orm";
import type { ModelCard } from "../schema/api.ts";
import { adapters } from "../schema/db.ts";
import type { AdapterRef } from "../schema/wire.ts";
import { wireAdapterName } from "./adapter-resolver.ts";
import type { Principal } from "./auth.ts";
import type { BaseModelInfo } from "./bases.ts";
import type { GatewayDeps } from "./deps.ts";
import { modelNotFound } from "./errors.ts";
import { formatModelId, parseModelId } from "./model-id.ts";

export interface ResolvedModel {
  base: BaseModelInfo;
  adapter: AdapterRef | null;
  /**
   * The model id an answer names: the one the client wrote, except that an alias is answered with the
   * version it drew (as OpenAI answers "gpt-4o" with the snapshot that ran), so a client splitting traffic
   * knows which version answered.
   */
  model: string;
}

export async function resolveModel(
  deps: GatewayDeps,
  caller: Principal,
  model: string,
): Promise<ResolvedModel> {
  const id = parseModelId(model);
  const base = deps.bases.get(id.base);
  if (!base) throw modelNotFound(model);
  const adapter = await deps.adapters.resolve(deps.db, caller, id, model);
  const drawn = adapter !== null && adapter.name !== wireAdapterName(caller.orgId, id.adapter!.name);
  return { base, adapter, model: drawn ? `${id.base}:${adapter.name}` : model };
}

/** Bases first, then the caller's adapters and aliases, each once, sorted by id. */
export async function listModels(deps: GatewayDeps, caller: Principal): Promise<ModelCard[]> {
  const bases = deps.bases.list();
  const cards: ModelCard[] = bases.map((b) => ({
    id: b.name,
    object: "model",
    created: b.created,
    owned_by: "luminet",
    max_model_len: b.contextLength,
    parent: null,
  }));
  const contextOf = new Map(bases.map((b) => [b.name, b.contextLength]));
  const rows = await deps.db
    .select({
      name: adapters.name,
      alias: adapters.alias,
      base: adapters.base,
      createdAt: adapters.createdAt,
    })
    .from(adapters)
    .where(and(eq(adapters.orgId, caller.orgId), eq(adapters.status, "ready"), isNull(adapters.deletedAt)));
  const own = new Map<string, ModelCard>();
  for (const row of rows) {
    const context = contextOf.get(row.base);
    if (context === undefined) continue;
    for (const name of row.alias ? [row.name, row.alias] : [row.name]) {
      const id = formatModelId(row.base, { org: caller.orgId, name });
      const created = Math.floor(row.createdAt.getTime() / 1000);
      const seen = own.get(id);
      if (!seen || created < seen.created) {
        own.set(id, {
          id,
          object: "model",
          created,
          owned_by: caller.orgId,
          max_model_len: context,
          parent: row.base,
        });
      }
    }
  }
  return [...cards, ...[...own.values()].sort((a, b) => a.id.localeCompare(b.id))];
}
