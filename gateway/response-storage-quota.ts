// How many bytes one org's stored responses (with their streams' event logs) and stored chat completions
// may hold together, as the database stores them (compressed where large): at most its limit (its own,
// else the gateway's maxOrgResponseBytes; org-storage-limit.ts). They are kept until the retention sweeps
// them, and with --response-retention-days 0 until deleted, so without a limit an org could fill the
// database. Triggers count every write into the org's shards (schema/db.ts response_storage); a request
// that would store (a Responses API request unless `store: false`, a chat completion with `store: true`)
// is refused before it runs once its org holds its limit. What a response will hold is known only once
// it has run, so responses running at once can together pass the limit by their own sizes, and the count
// read is the one cached with the caller's limits (caller-limits.ts, at most 30 s old): a busy org may
// pass its limit by what it stores in that time. A refusal reads the count afresh, so deleting makes room
// at once.
import type { Db } from "../db/open.ts";
import type { CallerLimits, CallerLimitsCache } from "./caller-limits.ts";
import { ApiError } from "./errors.ts";

export const DEFAULT_MAX_ORG_RESPONSE_BYTES = 100 * 1024 ** 3;

export interface ResponseStorageDeps {
  db: Db;
  callerLimits: CallerLimitsCache;
  limits: { maxOrgResponseBytes: number };
}

/** 400 response_storage_limit_exceeded, before any work, when the caller's org holds its limit or more. */
export async function refuseOverResponseStorage(deps: ResponseStorageDeps, keyId: string): Promise<void> {
  const limitOf = (limits: CallerLimits) => limits.responseStorageLimit ?? deps.limits.maxOrgResponseBytes;
  const cached = await deps.callerLimits.get(deps.db, keyId);
  if (cached.responseBytes < limitOf(cached)) return;
  deps.callerLimits.forget(keyId);
  const fresh = await deps.callerLimits.get(deps.db, keyId);
  const limit = limitOf(fresh);
  if (fresh.responseBytes < limit) return;
  throw new ApiError(
    400,
    "invalid_request_error",
    `You have exceeded your response storage quota: your organization's stored responses and chat ` +
      `completions hold ${fresh.responseBytes} bytes, and together they may hold ${limit}. Delete ones you ` +
      "no longer need (DELETE /v1/chat/completions/{id}, DELETE /v1/responses/{id}: deleting a response " +
      "that later ones continue copies its conversation into them), or send `store: false`.",
    "response_storage_limit_exceeded",
    "store",
  );
}
