// Adapter blobs in a Cloudflare R2 bucket through its Workers binding: where the gateway on Workers stores
// accepted adapters. The layout is every store's, <prefix>/<key>/adapter_config.json and
// adapter_model.safetensors, so workers read the same bucket as r2://bucket/<prefix> over R2's S3 API.
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import {
  ADAPTER_FILES,
  BlobNotFoundError,
  BlobTooLargeError,
  type FetchLimits,
  fetchBothFiles,
  keySegments,
  type WritableBlobStore,
} from "../worker/adapters/blob-store.ts";

/** The part of a Workers R2Bucket binding the store uses. */
export interface R2BucketBinding {
  get(key: string): Promise<{ size: number; arrayBuffer(): Promise<ArrayBuffer> } | null>;
  put(key: string, value: ArrayBufferView): Promise<unknown>;
  delete(keys: string[]): Promise<void>;
}

export class R2BlobStore implements WritableBlobStore {
  /**
   * @param binding the binding's name, for messages
   * @param prefix key prefix inside the bucket, without leading or trailing slashes; may be empty
   */
  constructor(
    private readonly bucket: R2BucketBinding,
    private readonly binding: string,
    private readonly prefix = "",
  ) {}

  get location(): string {
    return `R2 binding ${this.binding}${this.prefix ? `/${this.prefix}` : ""}`;
  }

  #objectKey(key: string): string {
    return [...(this.prefix ? keySegments(this.prefix) : []), ...keySegments(key)].join("/");
  }

  fetchAdapter(key: string, dir: string): Promise<void> {
    return fetchBothFiles(this, key, dir);
  }

  async fetchFile(key: string, path: string, limits: FetchLimits = {}): Promise<number> {
    const objectKey = this.#objectKey(key);
    const shown = `${this.binding}:${objectKey}`;
    const object = await this.bucket.get(objectKey);
    if (!object) throw new BlobNotFoundError(`${shown} does not exist`);
    if (limits.maxBytes !== undefined && object.size > limits.maxBytes) {
      throw new BlobTooLargeError(shown, limits.maxBytes);
    }
    await writeFile(path, new Uint8Array(await object.arrayBuffer()));
    return object.size;
  }

  async putAdapter(key: string, dir: string): Promise<void> {
    for (const file of ADAPTER_FILES) {
      await this.bucket.put(this.#objectKey(`${key}/${file}`), await readFile(join(dir, file)));
    }
  }

  async removeAdapter(key: string): Promise<void> {
    await this.bucket.delete(ADAPTER_FILES.map((file) => this.#objectKey(`${key}/${file}`)));
  }
}
