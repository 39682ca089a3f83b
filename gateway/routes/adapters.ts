// The adapter admin API, for keys with the "admin" scope, always on the caller's own org:
//   POST   /v1/adapters?base=&name=&alias=     upload; the body is the adapter, streamed:
//            application/x-tar          a PEFT folder (adapter_config.json + adapter_model.safetensors)
//            application/octet-stream   one .safetensors; its config from rank=&alpha=&target_modules=q_proj,v_proj
//                                       or from the file's __metadata__
//   POST   /v1/adapters  application/json {"base","name","alias"?,"source","rank"?,"alpha"?,"target_modules"?}
//            the gateway fetches the adapter from `source`, a URL under a registered adapter source
//            (gateway/adapter-sources.ts), then validates and stores it exactly as an upload
//   GET    /v1/adapters                  the org's adapters
//   GET    /v1/adapters/:name            one
//   PATCH  /v1/adapters/:name            {"traffic_weight": 0-100} or {"pinned": true|false}
//   DELETE /v1/adapters/:name[?force=true]
// Names are written `<name>` or `<org>/<name>`; another org's prefix is refused. Uploads bypass the
// app's JSON body limit (app.ts mounts this before it) and are capped by the adapter storage instead; a
// JSON create gets the JSON limit here. An org's adapters together are capped by maxOrgAdapterBytes
// (adapter-storage-quota.ts): a full org is refused before the upload is read.
import type { Context } from "hono";
import { Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import { ADAPTER_NAME, AdapterFromSource, AdapterPatch } from "../../schema/adapter-api.ts";
import { fitsFloat32 } from "../../worker/adapters/peft-config.ts";
import {
  assertNamesFree,
  baseArchitecture,
  type CreateAdapter,
  createAdapter,
  deleteAdapter,
  getAdapter,
  listAdapters,
  setPinned,
  setTrafficWeight,
} from "../adapter-admin.ts";
import type { AdapterDescription, AdapterStorage } from "../adapter-storage.ts";
import { refuseFullAdapterStorage } from "../adapter-storage-quota.ts";
import { callerOrgOnly, requireScope } from "../auth.ts";
import type { GatewayEnv } from "../context.ts";
import type { GatewayDeps } from "../deps.ts";
import {
  ApiError,
  errorResponse,
  invalidBody,
  invalidRequest,
  payloadTooLarge,
  permissionDenied,
} from "../errors.ts";
import { readBody, readBodyText } from "../request-body.ts";

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

/**
 * A single .safetensors' config: rank, alpha and target_modules all given, or none of them. An alpha
 * float32 cannot hold is refused here, naming `alpha` (the loader would name lora_alpha, which the caller
 * never wrote).
 */
function singleFileConfig(
  rank: number | undefined,
  alpha: number | undefined,
  targetModules: string[] | undefined,
): AdapterDescription["config"] {
  if (alpha !== undefined && !fitsFloat32(alpha)) {
    throw invalidRequest(
      `Invalid 'alpha': expected a positive number float32 holds (1.4e-45 to 3.4e38), got ${alpha}.`,
      "alpha",
    );
  }
  if (rank === undefined && alpha === undefined && targetModules === undefined) return null;
  if (rank === undefined || alpha === undefined || targetModules === undefined) {
    throw invalidRequest("Give rank, alpha and target_modules together, or none of them.", "rank");
  }
  return { rank, alpha, targetModules };
}

function queryConfig(query: Record<string, string>): AdapterDescription["config"] {
  const { rank, alpha, target_modules: targets } = query;
  const targetModules = targets
    ?.split(",")
    .map((t) => t.trim())
    .filter(Boolean);
  if (targetModules?.length === 0) {
    throw invalidRequest("Invalid 'target_modules': empty.", "target_modules");
  }
  return singleFileConfig(
    rank === undefined ? undefined : positiveNumber("rank", rank, true),
    alpha === undefined ? undefined : positiveNumber("alpha", alpha, false),
    targetModules,
  );
}

/** What both ways of creating check before any adapter byte is read. */
interface Prepared {
  name: string;
  alias: string | null;
  adapter: AdapterDescription;
  storage: AdapterStorage;
}

async function prepare(
  deps: GatewayDeps,
  org: string,
  fields: { base: string; name: string; alias?: string | undefined; config: AdapterDescription["config"] },
): Promise<Prepared> {
  const name = ownName(org, fields.name, "name");
  const alias = fields.alias ? ownName(org, fields.alias, "alias") : null;
  if (alias === name) throw invalidRequest("An adapter's alias must differ from its name.", "alias");
  const architecture = await baseArchitecture(deps, fields.base);
  await assertNamesFree(deps, org, name, alias);
  await refuseFullAdapterStorage(deps.db, org, deps.limits.maxOrgAdapterBytes);
  if (!deps.adapterStorage) {
    throw new ApiError(
      503,
      "server_error",
      "This gateway has no adapter blob store configured.",
      "no_storage",
    );
  }
  return {
    name,
    alias,
    adapter: { base: fields.base, architecture, config: fields.config },
    storage: deps.adapterStorage,
  };
}

/** Stores the staged adapter and answers 201 with it; the scratch space goes either way. */
async function created(c: Context<GatewayEnv>, deps: GatewayDeps, input: CreateAdapter) {
  try {
    const adapter = await createAdapter(deps, input);
    deps.log.info({ adapter: adapter.id, base: adapter.base, bytes: adapter.bytes }, "adapter created");
    return c.json(adapter, 201);
  } finally {
    await input.staged.discard();
  }
}

const isJson = (c: Context) =>
  (c.req.header("content-type") ?? "").split(";")[0]!.trim().toLowerCase() === "application/json";

export function adapterRoutes(deps: GatewayDeps): Hono<GatewayEnv> {
  const routes = new Hono<GatewayEnv>();
  routes.use("*", requireScope("admin"), callerOrgOnly);
  const jsonLimit = bodyLimit({
    maxSize: deps.limits.maxBodyBytes,
    onError: () => errorResponse(payloadTooLarge(deps.limits.maxBodyBytes)),
  });

  /** JSON: the gateway fetches the adapter from its registered source URL. */
  const fromSource = async (c: Context<GatewayEnv>) => {
    const org = c.get("principal").orgId;
    const body = await readBody(c, AdapterFromSource);
    const { name, alias, adapter, storage } = await prepare(deps, org, {
      ...body,
      config: singleFileConfig(body.rank, body.alpha, body.target_modules),
    });
    const staged = await storage.stageSource(body.source, adapter);
    return created(c, deps, { org, name, base: body.base, alias, staged, source: body.source });
  };

  /** Anything else: the body is the adapter, its fields in the query. */
  const fromUpload = async (c: Context<GatewayEnv>) => {
    const org = c.get("principal").orgId;
    const query = c.req.query();
    if (!query.base)
      throw invalidRequest("Missing 'base': the base model the adapter was trained on.", "base");
    if (!query.name)
      throw invalidRequest("Missing 'name': the adapter's name, e.g. customer-acme-v3.", "name");
    const { name, alias, adapter, storage } = await prepare(deps, org, {
      base: query.base,
      name: query.name,
      alias: query.alias,
      config: queryConfig(query),
    });
    const body = c.req.raw.body;
    if (!body) throw invalidRequest("The request has no body: send the adapter.", "file");
    const length = c.req.header("content-length");
    const staged = await storage.stage(body, {
      ...adapter,
      contentType: c.req.header("content-type") ?? "",
      contentLength: length === undefined ? null : Number(length),
    });
    return created(c, deps, { org, name, base: query.base, alias, staged, source: null });
  };

  routes.post(
    "/",
    (c, next) => (isJson(c) ? jsonLimit(c, next) : next()),
    (c) => (isJson(c) ? fromSource(c) : fromUpload(c)),
  );

  routes.get("/", async (c) => {
    return c.json({ object: "list", data: await listAdapters(deps, c.get("principal").orgId) });
  });

  routes.get("/:name{.+}", async (c) => {
    const org = c.get("principal").orgId;
    return c.json(await getAdapter(deps, org, ownName(org, c.req.param("name"), "name")));
  });

  // Only an upload's body is large: every other body here is a small JSON object.
  routes.patch("/:name{.+}", jsonLimit, async (c) => {
    const org = c.get("principal").orgId;
    const name = ownName(org, c.req.param("name"), "name");
    const text = await readBodyText(c);
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      throw invalidRequest('The body must be JSON: {"traffic_weight": 0-100} or {"pinned": true|false}.');
    }
    const parsed = AdapterPatch.safeParse(json);
    if (!parsed.success) throw invalidBody(parsed.error);
    const patch = parsed.data;
    const updated =
      patch.traffic_weight !== undefined
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
