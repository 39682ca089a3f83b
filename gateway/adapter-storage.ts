// Where the admin API's adapters go, as the app sees it: stage an adapter (an upload streamed into scratch
// space, or a registered source URL fetched there) and validate it against the base model, then commit it to
// the blob store under a key or discard it; remove a deleted adapter's blob. Runtime-agnostic:
// gateway/node-adapter-storage.ts implements it on node:fs, which both entries have (workerd's is an
// in-memory /tmp).
import type { BaseArchitecture } from "../schema/db.ts";

/** What the caller told about an adapter besides its bytes. */
export interface AdapterDescription {
  base: string;
  architecture: BaseArchitecture;
  /** The config of a single .safetensors that has none in its metadata. */
  config: { rank: number; alpha: number; targetModules: string[] } | null;
}

/** An upload's description: the adapter's, and how its body is packed. */
export interface UploadDescription extends AdapterDescription {
  /** application/x-tar (a PEFT folder) or application/octet-stream (one .safetensors). */
  contentType: string;
  /** Declared length, when the client sent one: too large is refused before a byte is read. */
  contentLength: number | null;
}

/** An upload that passed validation, waiting in scratch space. */
export interface StagedAdapter {
  rank: number;
  alpha: number;
  /** Leaf names of the modules the adapter has weights for, e.g. ["q_proj", "v_proj"]. */
  targetModules: string[];
  /** Size and sha256 (hex) of adapter_model.safetensors, what workers check. */
  bytes: number;
  sha256: string;
  /** Copies it into the blob store under `blobKey`. */
  commit(blobKey: string): Promise<void>;
  /** Frees the scratch space; call it whether or not commit ran. */
  discard(): Promise<void>;
}

export interface AdapterStorage {
  /** Where blobs go, for messages. */
  readonly location: string;
  /** Throws ApiError (400 naming what is wrong, 413 over the size cap) and keeps nothing when invalid. */
  stage(body: ReadableStream<Uint8Array>, upload: UploadDescription): Promise<StagedAdapter>;
  /**
   * As stage, for an adapter fetched from `source`, a URL under a registered adapter source (a PEFT
   * folder or one .safetensors); a source that is not registered or does not answer is a 400.
   */
  stageSource(source: string, adapter: AdapterDescription): Promise<StagedAdapter>;
  remove(blobKey: string): Promise<void>;
}
