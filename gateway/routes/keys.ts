// The API-key admin API, for keys with the "admin" scope, always on the caller's own org:
//   POST   /v1/keys            {"name", "scopes", "rpm", "tpm"}, all optional → 201: the record plus `key`,
//                              the key itself, which is never shown again
//   GET    /v1/keys            the org's keys, oldest first, revoked ones included
//   PATCH  /v1/keys/:prefix    {"rpm": N|null, "tpm": N|null}: per-minute limits; null removes one
//   DELETE /v1/keys/:prefix    revokes the key
// `:prefix` is the start of a key's visible prefix (at least "lk_" and 4 characters) and must match exactly
// one live key of the org; another org's key is "not found", never revealed. `?org=` naming another org is
// refused. A new key carries only scopes the creating key carries. Revoking the very key that makes the
// request is allowed: the request is answered, this gateway refuses the key from the next request on, and
// other gateway processes within 30 s (their auth cache); with the org's last admin key revoked, only the
// operator can mint a new one (`luminet keys create` on DATABASE_URL).
import { Hono } from "hono";
import { KeyCreate, type KeyCreated, KeyLimitsPatch, type KeyList } from "../../schema/key-api.ts";
import {
  ADMIN_SCOPE,
  createApiKey,
  keyObject,
  listApiKeys,
  revokeApiKey,
  setApiKeyLimits,
} from "../api-keys.ts";
import { callerOrgOnly, requireScope } from "../auth.ts";
import type { GatewayEnv } from "../context.ts";
import type { GatewayDeps } from "../deps.ts";
import { readBody } from "../request-body.ts";

export function keyRoutes(deps: GatewayDeps): Hono<GatewayEnv> {
  const routes = new Hono<GatewayEnv>();
  routes.use("*", requireScope(ADMIN_SCOPE), callerOrgOnly);

  routes.post("/", async (c) => {
    const caller = c.get("principal");
    const body = await readBody(c, KeyCreate);
    // The caller carries admin (the routes' guard), the only scope there is, so it may grant any.
    const scopes = [...new Set(body.scopes)];
    const { key, record } = await createApiKey(deps.db, {
      orgId: caller.orgId,
      name: body.name,
      scopes,
      requestsPerMinute: body.rpm,
      tokensPerMinute: body.tpm,
    });
    deps.log.info({ org: caller.orgId, key: record.prefix, by: caller.prefix }, "api key created");
    const created: KeyCreated = { ...keyObject(record), key };
    return c.json(created, 201);
  });

  routes.get("/", async (c) => {
    const list: KeyList = {
      object: "list",
      data: (await listApiKeys(deps.db, c.get("principal").orgId)).map(keyObject),
    };
    return c.json(list);
  });

  routes.patch("/:prefix", async (c) => {
    const caller = c.get("principal");
    const patch = await readBody(c, KeyLimitsPatch);
    const updated = await setApiKeyLimits(deps.db, caller.orgId, c.req.param("prefix"), {
      ...(patch.rpm !== undefined ? { requestsPerMinute: patch.rpm } : {}),
      ...(patch.tpm !== undefined ? { tokensPerMinute: patch.tpm } : {}),
    });
    deps.callerLimits.forget(updated.id);
    deps.log.info({ org: caller.orgId, key: updated.prefix, by: caller.prefix }, "api key limits set");
    return c.json(keyObject(updated));
  });

  routes.delete("/:prefix", async (c) => {
    const caller = c.get("principal");
    const revoked = await revokeApiKey(deps.db, caller.orgId, c.req.param("prefix"));
    deps.authCache.forget(revoked.keyHash);
    deps.callerLimits.forget(revoked.id);
    deps.log.info({ org: caller.orgId, key: revoked.prefix, by: caller.prefix }, "api key revoked");
    return c.json(keyObject(revoked));
  });

  return routes;
}
