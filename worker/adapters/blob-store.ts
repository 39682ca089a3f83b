// Where adapters are kept for good: a local folder, an S3-compatible bucket (AWS S3, Cloudflare R2, MinIO)
// or a plain http(s) URL. An adapter blob is a pair of files under its key: <key>/adapter_config.json and
// <key>/adapter_model.safetensors. openBlobStore picks the store from the --blobs URL.
import { createWriteStream } from "node:fs";
import { copyFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { ReadableStream as WebReadableStream } from "node:stream/web";
import { fileURLToPath } from "node:url";
import { type AwsCredentials, encodeS3Path, signRequest } from "./sigv4.ts";

export const ADAPTER_FILES = ["adapter_config.json", "adapter_model.safetensors"] as const;

export interface BlobStore {
  /** Where the store points, for messages (never with credentials). */
  readonly location: string;
  /**
   * Copies both files of the adapter under `key` into the existing folder `dir`. Throws
   * BlobNotFoundError when the store has no such adapter, BlobStoreError for anything else.
   */
  fetchAdapter(key: string, dir: string): Promise<void>;
}

export class BlobStoreError extends Error {
  override name = "BlobStoreError";
}

export class BlobNotFoundError extends BlobStoreError {
  override name = "BlobNotFoundError";
}

/** A key's path segments; refuses keys that could leave the store's root. */
function keySegments(key: string): string[] {
  const segments = key.split("/");
  if (
    key.length === 0 ||
    key.includes("\\") ||
    key.includes("\0") ||
    segments.some((s) => s === "" || s === "." || s === "..")
  ) {
    throw new BlobStoreError(
      `blob key ${JSON.stringify(key)} is not a relative path of non-empty segments without . or ..`,
    );
  }
  return segments;
}

export class FolderBlobStore implements BlobStore {
  readonly root: string;

  constructor(root: string) {
    this.root = resolve(root);
  }

  get location(): string {
    return this.root;
  }

  async fetchAdapter(key: string, dir: string): Promise<void> {
    const from = join(this.root, ...keySegments(key));
    for (const file of ADAPTER_FILES) {
      try {
        await copyFile(join(from, file), join(dir, file));
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === "ENOENT") {
          throw new BlobNotFoundError(`${join(from, file)} does not exist`);
        }
        throw new BlobStoreError(`copying ${join(from, file)}: ${(error as Error).message}`, {
          cause: error,
        });
      }
    }
  }
}

/** Streams one GET's body into a file; 404 is BlobNotFoundError, other failures BlobStoreError. */
async function download(
  url: URL,
  headers: Record<string, string>,
  path: string,
  timeoutMs: number,
  shown: string,
): Promise<void> {
  let response: Response;
  const signal = AbortSignal.timeout(timeoutMs);
  try {
    response = await fetch(url, { headers, signal, redirect: "follow" });
  } catch (error) {
    throw new BlobStoreError(`GET ${shown}: ${(error as Error).message}`, { cause: error });
  }
  if (response.status === 404) {
    await response.body?.cancel();
    throw new BlobNotFoundError(`GET ${shown}: 404 not found`);
  }
  if (!response.ok || !response.body) {
    // S3 explains refusals in an XML body (<Code>SignatureDoesNotMatch</Code>...): keep its start.
    const detail = (await response.text().catch(() => "")).replace(/\s+/g, " ").slice(0, 300);
    throw new BlobStoreError(`GET ${shown}: ${response.status} ${response.statusText} ${detail}`.trim());
  }
  try {
    await pipeline(
      Readable.fromWeb(response.body as WebReadableStream<Uint8Array>, { signal }),
      createWriteStream(path),
    );
  } catch (error) {
    throw new BlobStoreError(`GET ${shown}: reading the body: ${(error as Error).message}`, { cause: error });
  }
}

const DEFAULT_TIMEOUT_MS = 300_000;

/** Plain GETs of <base>/<key>/<file>: a CDN, a static file server, a public bucket. */
export class HttpBlobStore implements BlobStore {
  readonly base: URL;

  constructor(
    base: string | URL,
    private readonly timeoutMs = DEFAULT_TIMEOUT_MS,
  ) {
    this.base = new URL(base);
    if (this.base.protocol !== "http:" && this.base.protocol !== "https:") {
      throw new BlobStoreError(`${this.base.href} is not an http(s) URL`);
    }
    if (this.base.username || this.base.password) {
      throw new BlobStoreError("blob store URLs must not carry credentials");
    }
  }

  get location(): string {
    return this.base.href;
  }

  async fetchAdapter(key: string, dir: string): Promise<void> {
    const prefix = this.base.pathname.replace(/\/+$/, "");
    for (const file of ADAPTER_FILES) {
      const url = new URL(this.base);
      url.pathname = `${prefix}${encodeS3Path([...keySegments(key), file])}`;
      await download(url, {}, join(dir, file), this.timeoutMs, url.href);
    }
  }
}

export interface S3BlobStoreOptions {
  /** e.g. https://<account>.r2.cloudflarestorage.com or http://127.0.0.1:9000 */
  endpoint: string;
  bucket: string;
  /** Key prefix inside the bucket, without leading or trailing slashes; may be empty. */
  prefix: string;
  region: string;
  credentials: AwsCredentials;
  /** bucket.host/key (AWS's default) instead of host/bucket/key (R2, MinIO, any custom endpoint). */
  virtualHosted?: boolean;
  timeoutMs?: number;
}

/** GetObject over SigV4-signed fetches. */
export class S3BlobStore implements BlobStore {
  private readonly endpoint: URL;

  constructor(private readonly options: S3BlobStoreOptions) {
    this.endpoint = new URL(options.endpoint);
    if (this.endpoint.protocol !== "http:" && this.endpoint.protocol !== "https:") {
      throw new BlobStoreError(`S3 endpoint ${options.endpoint} is not an http(s) URL`);
    }
    if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(options.bucket)) {
      throw new BlobStoreError(`${JSON.stringify(options.bucket)} is not a valid bucket name`);
    }
  }

  get location(): string {
    const prefix = this.options.prefix ? `/${this.options.prefix}` : "";
    const at = new URL(this.endpoint.origin);
    if (this.options.virtualHosted) at.hostname = `${this.options.bucket}.${at.hostname}`;
    return `s3://${this.options.bucket}${prefix} at ${at.origin}`;
  }

  async fetchAdapter(key: string, dir: string): Promise<void> {
    const { bucket, prefix, region, credentials } = this.options;
    const objectKey = [...(prefix ? prefix.split("/") : []), ...keySegments(key)];
    for (const file of ADAPTER_FILES) {
      const url = new URL(this.endpoint.origin);
      if (this.options.virtualHosted) {
        url.hostname = `${bucket}.${url.hostname}`;
        url.pathname = encodeS3Path([...objectKey, file]);
      } else {
        url.pathname = encodeS3Path([bucket, ...objectKey, file]);
      }
      const headers = signRequest({ method: "GET", url, region, service: "s3", credentials });
      const shown = `s3://${bucket}/${[...objectKey, file].join("/")}`;
      await download(url, headers, join(dir, file), this.options.timeoutMs ?? DEFAULT_TIMEOUT_MS, shown);
    }
  }
}

/**
 * The store for a --blobs value: a path or file:// URL is a folder; s3://bucket/prefix and
 * r2://bucket/prefix are buckets (credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, optional
 * AWS_SESSION_TOKEN); http(s):// is a URL store. Bucket URLs take ?endpoint=URL and ?region=NAME; r2://
 * takes ?account=ID instead of an endpoint. s3:// without an endpoint is AWS itself (AWS_ENDPOINT_URL_S3
 * or AWS_ENDPOINT_URL override it, AWS_REGION names the region).
 */
export function openBlobStore(location: string, env: NodeJS.ProcessEnv = process.env): BlobStore {
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(location)?.[1]?.toLowerCase();
  if (scheme === undefined) return new FolderBlobStore(location);
  if (scheme === "file") return new FolderBlobStore(fileURLToPath(location));
  if (scheme === "http" || scheme === "https") return new HttpBlobStore(location);
  if (scheme !== "s3" && scheme !== "r2") {
    throw new BlobStoreError(
      `blob store ${location}: unknown scheme ${scheme}:// (use a folder, file://, s3://, r2://, http:// or https://)`,
    );
  }
  const url = new URL(location);
  const bucket = url.hostname;
  const prefix = decodeURIComponent(url.pathname).replace(/^\/+|\/+$/g, "");
  const accessKeyId = env.AWS_ACCESS_KEY_ID;
  const secretAccessKey = env.AWS_SECRET_ACCESS_KEY;
  if (!accessKeyId || !secretAccessKey) {
    throw new BlobStoreError(
      `blob store ${scheme}://${bucket}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (for R2, an R2 API token's key pair)`,
    );
  }
  const credentials: AwsCredentials = {
    accessKeyId,
    secretAccessKey,
    ...(env.AWS_SESSION_TOKEN ? { sessionToken: env.AWS_SESSION_TOKEN } : {}),
  };
  const param = (name: string) => url.searchParams.get(name) ?? undefined;
  for (const name of url.searchParams.keys()) {
    if (!["endpoint", "region", "account"].includes(name)) {
      throw new BlobStoreError(
        `blob store ${scheme}://${bucket}: unknown parameter ${name} (endpoint, region, account)`,
      );
    }
  }
  if (scheme === "r2") {
    const account = param("account");
    const endpoint =
      param("endpoint") ?? (account ? `https://${account}.r2.cloudflarestorage.com` : undefined);
    if (!endpoint) {
      throw new BlobStoreError(`blob store r2://${bucket}: add ?account=<account id> or ?endpoint=<url>`);
    }
    return new S3BlobStore({ endpoint, bucket, prefix, region: param("region") ?? "auto", credentials });
  }
  const region = param("region") ?? env.AWS_REGION ?? env.AWS_DEFAULT_REGION ?? "us-east-1";
  const endpoint = param("endpoint") ?? env.AWS_ENDPOINT_URL_S3 ?? env.AWS_ENDPOINT_URL;
  if (endpoint) return new S3BlobStore({ endpoint, bucket, prefix, region, credentials });
  return new S3BlobStore({
    endpoint: `https://s3.${region}.amazonaws.com`,
    bucket,
    prefix,
    region,
    credentials,
    virtualHosted: true,
  });
}
