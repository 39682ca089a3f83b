// GET /v1/storage's answer: what the caller's org keeps with Luminet against its storage limits, each kind
// in bytes with the most it may hold (the org's own limit where the operator set one, else the gateway's).
// A write past a limit is refused with 400 file_storage_limit_exceeded, adapter_storage_limit_exceeded,
// conversation_storage_limit_exceeded or (a request that would store once the org holds its limit)
// response_storage_limit_exceeded.
import { z } from "zod";

export const StorageUse = z.object({ bytes: z.int().min(0), limit: z.int().min(0) });
export type StorageUse = z.infer<typeof StorageUse>;

export const StorageObject = z.object({
  object: z.literal("storage"),
  org: z.string(),
  /** Its files not yet expired, batches' output and error files included. */
  files: StorageUse,
  /** Its live adapters' blobs. */
  adapters: StorageUse,
  /** Its conversations' items and metadata, as JSON in UTF-8. */
  conversations: StorageUse,
  /**
   * Its stored responses (with their streams' event logs) and stored chat completions: their JSON as the
   * database stores it (compressed where large).
   */
  responses: StorageUse,
});
export type StorageObject = z.infer<typeof StorageObject>;
