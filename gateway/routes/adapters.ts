// The adapter admin API, for keys with the "admin" scope, always on the caller's own org:
//   POST   /v1/adapters?base=&name=&alias=     upload; the body is the adapter, streamed:
//            application/x-tar          a PEFT folder (adapter_config.json + adapter_model.safetensors)
//            application/octet-stream   one .safetensors; its config from rank=&alpha=&target_modules=q_proj,v_proj
//                                       or from the file's __metadata__
//   GET    /v1/adapters                  the org's adapters
//   GET    /v1/adapters/:name            one
//   PATCH  /v1/adapters/:name            {"traffic_weight": 0-100} or {"pinned": true|false}
//   DELETE /v1/adapters/:name[?force=true]
// Names are written `<name>` or `<org>/<name>`; another org's prefix is refused. Uploads bypass the
// app's JSON body limit (app.ts mounts this before it) and are capped by the adapter storage instead.
import { Hono } from "hono";
import { ADAPTER_NAME, AdapterPatch } from "../../schema/adapter-api.ts";
import {
  assertNameFree,
  baseArchitecture,
  createAdapter,
  deleteAdapter,
  getAdapter,
  listAdapters,
  setPinned,
  setTrafficWeight,
} from "../adapter-admin.ts";
import type { UploadDescription } from "../adapter-storage.ts";
import { requireScope } from "../auth.ts";
import type { GatewayEnv } from "../context.ts";
import type { GatewayDeps } from "../deps.ts";
import { ApiError, invalidBody, invalidRequest, permissionDenied } from "../errors.ts";

/** `name` or `org/name` as the caller's org's adapter name; refuses another org and malformed names. */
function ownName(org: string, written: string, param: string): string {
  const slash = written.indexOf("/");
  const name = slash === -1 ? written : written.slice(slash + 1);
  if (slash !== -1 && written.slice(0, slash) !== org) {
    throw permissionDenied(`This API key belongs to org '${org}' and cannot manage '${written}'.`);
  }
  if (!ADAPTER_NAME.test(name)) {
    throw invalidRequest(
      `Invalid '${param}': '${written}' must be a name of 1 to 64 letters, digits, '.', '_' or '-' (optionally after '${org}/').`,
      param,
    );
  }
  return name;
}

function positiveNumber(param: string, value: string, integer: boolean): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0 || (integer && !Number.isInteger(n))) {
    throw invalidRequest(
      `Invalid '${param}': expected a positive ${integer ? "integer" : "number"}, got '${value}'.`,
      param,
    );
  }
  return n;
}

function singleFileConfig(query: Record<string, string>): UploadDescription["config"] {
  const { rank, alpha, target_modules: targets } = query;
  if (rank === undefined && alpha === undefined && targets === undefined) return null;
  if (rank === undefined || alpha === undefined || targets === undefined) {
    throw invalidRequest("Give rank, alpha and target_modules together, or none of them.", "rank");
  }
  const targetModules = targets
    .split(",")
    .map((t) => t.trim())
    .filter(Boolean);
  if (targetModules.length === 0) throw invalidRequest("Invalid 'target_modules': empty.", "target_modules");
  return {
    rank: positiveNumber("rank", rank, true),
    alpha: positiveNumber("alpha", alpha, false),
    targetModules,
  };
}

export function adapterRoutes(deps: GatewayDeps): Hono<GatewayEnv> {
  const routes = new Hono<GatewayEnv>();
  routes.use("*", requireScope("admin"));

  routes.post("/", async (c) => {
    const org = c.get("principal").orgId;
    const query = c.req.query();
    if (!query.base)
      throw invalidRequest("Missing 'base': the base model the adapter was trained on.", "base");
    if (!query.name)
      throw invalidRequest("Missing 'name': the adapter's name, e.g. customer-acme-v3.", "name");
    const name = ownName(org, query.name, "name");
    const alias = query.alias ? ownName(org, query.alias, "alias") : null;
    if (alias === name) throw invalidRequest("An adapter's alias must differ from its name.", "alias");
    const config = singleFileConfig(query);
    const architecture = await baseArchitecture(deps, query.base);
    await assertNameFree(deps, org, name);
    if (!deps.adapterStorage) {
      throw new ApiError(
        503,
        "server_error",
        "This gateway has no adapter blob store configured.",
        "no_storage",
      );
    }
    const body = c.req.raw.body;
    if (!body) throw invalidRequest("The request has no body: send the adapter.", "file");
    const length = c.req.header("content-length");
    const staged = await deps.adapterStorage.stage(body, {
      base: query.base,
      architecture,
      contentType: c.req.header("content-type") ?? "",
      contentLength: length === undefined ? null : Number(length),
      config,
    });
    try {
      const created = await createAdapter(deps, { org, name, base: query.base, alias, staged });
      deps.log.info({ adapter: created.id, base: created.base, bytes: created.bytes }, "adapter created");
      return c.json(created, 201);
    } finally {
      await staged.discard();
    }
  });

  routes.get("/", async (c) => {
    return c.json({ object: "list", data: await listAdapters(deps, c.get("principal").orgId) });
  });

  routes.get("/:name{.+}", async (c) => {
    const org = c.get("principal").orgId;
    return c.json(await getAdapter(deps, org, ownName(org, c.req.param("name"), "name")));
  });

  routes.patch("/:name{.+}", async (c) => {
    const org = c.get("principal").orgId;
    const name = ownName(org, c.req.param("name"), "name");
    let json: unknown;
    try {
      json = await c.req.json();
    } catch {
      throw invalidRequest('The body must be JSON: {"traffic_weight": 0-100} or {"pinned": true|false}.');
    }
    const parsed = AdapterPatch.safeParse(json);
    if (!parsed.success) throw invalidBody(parsed.error);
    const patch = parsed.data;
    const updated =
      "traffic_weight" in patch
        ? await setTrafficWeight(deps, org, name, patch.traffic_weight)
        : await setPinned(deps, org, name, patch.pinned);
    return c.json(updated);
  });

  routes.delete("/:name{.+}", async (c) => {
    const org = c.get("principal").orgId;
    const name = ownName(org, c.req.param("name"), "name");
    await deleteAdapter(deps, org, name, c.req.query("force") === "true");
    deps.log.info({ adapter: `${org}/${name}` }, "adapter deleted");
    return c.json({ id: `${org}/${name}`, object: "adapter", deleted: true });
  });

  return routes;
}
