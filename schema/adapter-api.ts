// The adapter admin API's shapes (`/v1/adapters`): the adapter object the gateway returns and `luminet
// adapters` prints, the list, the create-from-source body and the PATCH body. Uploads carry their fields as
// query parameters (the body is the adapter itself); ADAPTER_NAME is the rule for names and aliases.
import { z } from "zod";

/** An adapter's or alias's name inside its org: it sits in model ids after "<org>/", so no "/" or ":". */
export const ADAPTER_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export const AdapterResidency = z.object({
  worker_id: z.string(),
  tier: z.enum(["slot", "ram", "disk"]),
});
export type AdapterResidency = z.infer<typeof AdapterResidency>;

export const AdapterObject = z.object({
  /** "<org>/<name>", as the CLI and model ids write it. */
  id: z.string(),
  object: z.literal("adapter"),
  org: z.string(),
  name: z.string(),
  base: z.string(),
  /** The model id that runs exactly this version. */
  model: z.string(),
  alias: z.string().nullable(),
  traffic_weight: z.int().min(0).max(100),
  pinned: z.boolean(),
  rank: z.int().positive(),
  alpha: z.number(),
  target_modules: z.array(z.string()),
  bytes: z.int().nonnegative().nullable(),
  sha256: z.string().nullable(),
  /** The registered URL it was fetched from; null when it was uploaded. */
  source: z.string().nullable(),
  status: z.enum(["uploading", "ready", "failed", "deleted"]),
  /** Unix seconds. */
  created_at: z.int(),
  /** Where live workers hold it now, from their heartbeats. */
  resident: z.array(AdapterResidency),
});
export type AdapterObject = z.infer<typeof AdapterObject>;

export const AdapterList = z.object({ object: z.literal("list"), data: z.array(AdapterObject) });
export type AdapterList = z.infer<typeof AdapterList>;

/** POST /v1/adapters as JSON: the gateway fetches the adapter from `source`, a registered URL. */
export const AdapterFromSource = z.strictObject({
  base: z.string().min(1),
  name: z.string().min(1),
  alias: z.string().min(1).optional(),
  /** https://… of a PEFT folder or a .safetensors file, s3://bucket/key or r2://bucket/key (?endpoint=…). */
  source: z.string().min(1),
  /** The config of a single .safetensors without one in its metadata: all three, or none. */
  rank: z.int().positive().optional(),
  alpha: z.number().positive().optional(),
  target_modules: z.array(z.string().min(1)).min(1).optional(),
});
export type AdapterFromSource = z.infer<typeof AdapterFromSource>;

const ONE_CHANGE = "Give exactly one of traffic_weight (0-100) or pinned (true|false).";

/**
 * One change per request: a traffic weight within the alias, or pinned on every worker of the base. One
 * object with both fields optional rather than a union of two, so that a bad body gets an error naming
 * its field (a union answers only "Invalid input").
 */
export const AdapterPatch = z
  .strictObject(
    {
      traffic_weight: z.int({ error: "must be an integer from 0 to 100" }).min(0).max(100).optional(),
      pinned: z.boolean({ error: "must be true or false" }).optional(),
    },
    {
      error: (issue) =>
        issue.code === "unrecognized_keys"
          ? `Unknown field ${issue.keys.map((k) => `'${k}'`).join(", ")}. ${ONE_CHANGE}`
          : ONE_CHANGE,
    },
  )
  .refine(
    (patch) => patch.traffic_weight === undefined || patch.pinned === undefined,
    "Give one change at a time: traffic_weight or pinned, not both (send two requests).",
  )
  .refine(
    (
      patch,
    ): patch is
      | { traffic_weight: number; pinned?: undefined }
      | { pinned: boolean; traffic_weight?: undefined } =>
      patch.traffic_weight !== undefined || patch.pinned !== undefined,
    ONE_CHANGE,
  );
export type AdapterPatch = z.infer<typeof AdapterPatch>;

export const AdapterDeleted = z.object({
  id: z.string(),
  object: z.literal("adapter"),
  deleted: z.literal(true),
});
export type AdapterDeleted = z.infer<typeof AdapterDeleted>;
