// The API-key admin API's shapes (`/v1/keys`): the key object the gateway returns and `luminet keys`
// prints in both of its modes, the list, the creation body and answer (the key itself, shown once), and
// the limits PATCH body. `rpm`/`tpm` are a key's requests and tokens per minute; null means no limit.
import { z } from "zod";
import { textColumnString } from "./api.ts";

/**
 * The scopes a key may carry: "admin" (keys, adapters, webhooks, the fleet's signal, the dashboard's admin
 * pages). Any other name would grant nothing, so a typo ("adminn") is refused rather than stored.
 */
export const SCOPES = ["admin"] as const;

const perMinute = z.int().min(1).max(2_147_483_647).nullable();

export const KeyObject = z.object({
  id: z.string(),
  object: z.literal("api_key"),
  org: z.string(),
  /** The key's visible first characters; the only part of it ever shown again. */
  prefix: z.string(),
  name: z.string(),
  scopes: z.array(z.string()),
  rpm: z.int().nullable(),
  tpm: z.int().nullable(),
  /** Unix seconds. */
  created_at: z.int(),
  last_used_at: z.int().nullable(),
  revoked_at: z.int().nullable(),
});
export type KeyObject = z.infer<typeof KeyObject>;

export const KeyList = z.object({ object: z.literal("list"), data: z.array(KeyObject) });
export type KeyList = z.infer<typeof KeyList>;

/** POST /v1/keys: every field optional; unknown fields are refused, so a typo never creates a wrong key. */
export const KeyCreate = z.strictObject({
  name: textColumnString().min(1).max(64).default("default"),
  scopes: z
    .array(z.enum(SCOPES, { error: `a scope is one of: ${SCOPES.join(", ")}` }))
    .max(16)
    .default([]),
  rpm: perMinute.default(null),
  tpm: perMinute.default(null),
});
export type KeyCreate = z.input<typeof KeyCreate>;

/** The answer to POST /v1/keys: the key's record plus the key itself, which is never shown again. */
export const KeyCreated = KeyObject.extend({ key: z.string() });
export type KeyCreated = z.infer<typeof KeyCreated>;

/** PATCH /v1/keys/:prefix: the limits to change; a limit left out keeps its value, null removes it. */
export const KeyLimitsPatch = z
  .strictObject({ rpm: perMinute.optional(), tpm: perMinute.optional() })
  .refine(
    (patch) => patch.rpm !== undefined || patch.tpm !== undefined,
    "Give 'rpm' and/or 'tpm': a whole number per minute, or null to remove the limit.",
  );
export type KeyLimitsPatch = z.infer<typeof KeyLimitsPatch>;
