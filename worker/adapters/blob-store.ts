// Where adapters are kept for good: a local folder, an S3-compatible bucket (AWS S3, Cloudflare R2, MinIO)
// or a plain http(s) URL. An adapter blob is a pair of files under its key: <key>/adapter_config.json and
// <key>/adapter_model.safetensors. openBlobStore picks the store from the --blobs URL. Workers only read;
// the gateway also writes accepted uploads (openWritableBlobStore: a folder or a bucket, never http).
import { createReadStream, createWriteStream } from "node:fs";
import { copyFile, cp, mkdir, rm, stat } from "node:fs/promises";
import { join, resolve } from "node:path";
import { Readable, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { ReadableStream as WebReadableStream } from "node:stream/web";
import { fileURLToPath } from "node:url";
import { sha256OfFile } from "./file-hash.ts";
import { type AwsCredentials, encodeS3Path, type SignableRequest, signRequest } from "./sigv4.ts";

export const ADAPTER_FILES = ["adapter_config.json", "adapter_model.safetensors"] as const;

/** Bounds on one fetched file, for fetches whose source the fetching process does not trust. */
export interface FetchLimits {
  /** A larger file is refused with BlobTooLargeError, before or while it is read. */
  maxBytes?: number;
  /** Follow an http redirect only to a URL this accepts; without it every redirect is followed. */
  redirectAllowed?: (url: URL) => boolean;
}

export interface BlobStore {
  /** Where the store points, for messages (never with credentials). */
  readonly location: string;
  /**
   * Copies both files of the adapter under `key` into the existing folder `dir`. Throws
   * BlobNotFoundError when the store has no such adapter, BlobStoreError for anything else.
   */
  fetchAdapter(key: string, dir: string): Promise<void>;
  /** Copies the one file stored at `key` to `path` and returns its size; errors as fetchAdapter's. */
  fetchFile(key: string, path: string, limits?: FetchLimits): Promise<number>;
}

/** A store the gateway writes accepted adapters to. */
export interface WritableBlobStore extends BlobStore {
  /** Stores both files of the adapter in the folder `dir` under `key`. */
  putAdapter(key: string, dir: string): Promise<void>;
  /** Removes the adapter under `key`; nothing there is not an error. */
  removeAdapter(key: string): Promise<void>;
}

export class BlobStoreError extends Error {
  override name = "BlobStoreError";
}

export class BlobNotFoundError extends BlobStoreError {
  override name = "BlobNotFoundError";
}

export class BlobTooLargeError extends BlobStoreError {
  override name = "BlobTooLargeError";
  constructor(
    shown: string,
    readonly limit: number,
  ) {
    super(`${shown} is larger than ${limit} bytes`);
  }
}

/** Both files of an adapter, fetched one by one with fetchFile. */
export async function fetchBothFiles(store: BlobStore, key: string, dir: string): Promise<void> {
  for (const file of ADAPTER_FILES) await store.fetchFile(`${key}/${file}`, join(dir, file));
}

/** A key's path segments; refuses keys that could leave the store's root. */
export function keySegments(key: string): string[] {
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

  fetchAdapter(key: string, dir: string): Promise<void> {
    return fetchBothFiles(this, key, dir);
  }

  async fetchFile(key: string, path: string, limits: FetchLimits = {}): Promise<number> {
    const from = join(this.root, ...keySegments(key));
    try {
      const { size } = await stat(from);
      if (limits.maxBytes !== undefined && size > limits.maxBytes) {
        throw new BlobTooLargeError(from, limits.maxBytes);
      }
      await copyFile(from, path);
      return size;
    } catch (error) {
      if (error instanceof BlobStoreError) throw error;
      if ((error as NodeJS.ErrnoException).code === "ENOENT") {
        throw new BlobNotFoundError(`${from} does not exist`);
      }
      throw new BlobStoreError(`copying ${from}: ${(error as Error).message}`, { cause: error });
    }
  }

  async putAdapter(key: string, dir: string): Promise<void> {
    const target = join(this.root, ...keySegments(key));
    await mkdir(target, { recursive: true });
    for (const file of ADAPTER_FILES) await cp(join(dir, file), join(target, file));
  }

  async removeAdapter(key: string): Promise<void> {
    await rm(join(this.root, ...keySegments(key)), { recursive: true, force: true });
  }
}

const MAX_REDIRECTS = 5;

/** A failed response as an error that keeps the start of what the server said. */
async function refusal(method: string, shown: string, response: Response): Promise<BlobStoreError> {
  // S3 explains refusals in an XML body (<Code>SignatureDoesNotMatch</Code>...): keep its start.
  const detail = (await response.text().catch(() => "")).replace(/\s+/g, " ").slice(0, 300);
  return new BlobStoreError(`${method} ${shown}: ${response.status} ${response.statusText} ${detail}`.trim());
}

/** One GET, following redirects only where `limits.redirectAllowed` accepts them. */
async function get(
  url: URL,
  headers: Record<string, string>,
  signal: AbortSignal,
  shown: string,
  limits: FetchLimits,
): Promise<Response> {
  const allowed = limits.redirectAllowed;
  let at = url;
  for (let hop = 0; ; hop++) {
    let response: Response;
    try {
      response = await fetch(at, { headers, signal, redirect: allowed ? "manual" : "follow" });
    } catch (error) {
      throw new BlobStoreError(`GET ${shown}: ${(error as Error).message}`, { cause: error });
    }
    const location = response.headers.get("location");
    if (!allowed || response.status < 300 || response.status > 399 || location === null) return response;
    await response.body?.cancel();
    const next = new URL(location, at);
    if (!allowed(next) || hop === MAX_REDIRECTS) {
      throw new BlobStoreError(
        hop === MAX_REDIRECTS
          ? `GET ${shown}: more than ${MAX_REDIRECTS} redirects`
          : `GET ${shown}: redirected to ${next.origin}${next.pathname}, which is not an allowed location`,
      );
    }
    at = next;
  }
}

/**
 * Streams one GET's body into a file and returns its size; 404 is BlobNotFoundError, more than
 * `limits.maxBytes` BlobTooLargeError, other failures BlobStoreError.
 */
async function download(
  url: URL,
  headers: Record<string, string>,
  path: string,
  timeoutMs: number,
  shown: string,
  limits: FetchLimits = {},
): Promise<number> {
  const signal = AbortSignal.timeout(timeoutMs);
  const response = await get(url, headers, signal, shown, limits);
  if (response.status === 404) {
    await response.body?.cancel();
    throw new BlobNotFoundError(`GET ${shown}: 404 not found`);
  }
  if (!response.ok || !response.body) throw await refusal("GET", shown, response);
  const { maxBytes } = limits;
  if (maxBytes !== undefined && Number(response.headers.get("content-length") ?? 0) > maxBytes) {
    await response.body.cancel();
    throw new BlobTooLargeError(shown, maxBytes);
  }
  let size = 0;
  const counter = new Transform({
    transform(chunk: Buffer, _encoding, done) {
      size += chunk.length;
      done(maxBytes !== undefined && size > maxBytes ? new BlobTooLargeError(shown, maxBytes) : null, chunk);
    },
  });
  try {
    await pipeline(
      Readable.fromWeb(response.body as WebReadableStream<Uint8Array>, { signal }),
      counter,
      createWriteStream(path),
    );
  } catch (error) {
    if (error instanceof BlobTooLargeError) throw error;
    throw new BlobStoreError(`GET ${shown}: reading the body: ${(error as Error).message}`, { cause: error });
  }
  return size;
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

  fetchAdapter(key: string, dir: string): Promise<void> {
    return fetchBothFiles(this, key, dir);
  }

  fetchFile(key: string, path: string, limits?: FetchLimits): Promise<number> {
    const url = new URL(this.base);
    url.pathname = `${this.base.pathname.replace(/\/+$/, "")}${encodeS3Path(keySegments(key))}`;
    return download(url, {}, path, this.timeoutMs, url.href, limits);
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

/** GetObject, PutObject and DeleteObject over SigV4-signed fetches. */
export class S3BlobStore implements WritableBlobStore {
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

  /** The object's URL and its name for messages (s3://bucket/key). */
  private object(key: string): { url: URL; shown: string } {
    const { bucket, prefix } = this.options;
    const objectKey = [...(prefix ? prefix.split("/") : []), ...keySegments(key)];
    const url = new URL(this.endpoint.origin);
    if (this.options.virtualHosted) {
      url.hostname = `${bucket}.${url.hostname}`;
      url.pathname = encodeS3Path(objectKey);
    } else {
      url.pathname = encodeS3Path([bucket, ...objectKey]);
    }
    return { url, shown: `s3://${bucket}/${objectKey.join("/")}` };
  }

  private sign(method: string, url: URL, extra: Pick<SignableRequest, "headers" | "payloadSha256"> = {}) {
    const { region, credentials } = this.options;
    return signRequest({ method, url, region, service: "s3", credentials, ...extra });
  }

  private get timeoutMs(): number {
    return this.options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  }

  fetchAdapter(key: string, dir: string): Promise<void> {
    return fetchBothFiles(this, key, dir);
  }

  fetchFile(key: string, path: string, limits?: FetchLimits): Promise<number> {
    const { url, shown } = this.object(key);
    return download(url, this.sign("GET", url), path, this.timeoutMs, shown, limits);
  }

  /** PUTs both files, each signed with its sha256. */
  async putAdapter(key: string, dir: string): Promise<void> {
    for (const file of ADAPTER_FILES) await this.putFile(`${key}/${file}`, join(dir, file));
  }

  private async putFile(key: string, path: string): Promise<void> {
    const { url, shown } = this.object(key);
    const [{ size }, payloadSha256] = await Promise.all([stat(path), sha256OfFile(path)]);
    if (payloadSha256 === undefined) throw new BlobStoreError(`PUT ${shown}: cannot read ${path}`);
    const headers = this.sign("PUT", url, {
      headers: { "content-length": String(size) },
      payloadSha256,
    });
    let response: Response;
    try {
      response = await fetch(url, {
        method: "PUT",
        headers,
        body: Readable.toWeb(createReadStream(path)) as ReadableStream<Uint8Array>,
        duplex: "half",
        signal: AbortSignal.timeout(this.timeoutMs),
      } as RequestInit);
    } catch (error) {
      throw new BlobStoreError(`PUT ${shown}: ${(error as Error).message}`, { cause: error });
    }
    if (!response.ok) throw await refusal("PUT", shown, response);
    await response.body?.cancel();
  }

  async removeAdapter(key: string): Promise<void> {
    for (const file of ADAPTER_FILES) {
      const { url, shown } = this.object(`${key}/${file}`);
      let response: Response;
      try {
        response = await fetch(url, {
          method: "DELETE",
          headers: this.sign("DELETE", url),
          signal: AbortSignal.timeout(this.timeoutMs),
        });
      } catch (error) {
        throw new BlobStoreError(`DELETE ${shown}: ${(error as Error).message}`, { cause: error });
      }
      // S3 answers 204 whether or not the object existed; other S3-compatible servers may say 404.
      if (!response.ok && response.status !== 404) throw await refusal("DELETE", shown, response);
      await response.body?.cancel();
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
  const scheme = schemeOf(location);
  if (scheme === "http" || scheme === "https") return new HttpBlobStore(location);
  return openWritableBlobStore(location, env);
}

/** The store for the gateway's --blobs: as openBlobStore, without http(s), which cannot be written. */
export function openWritableBlobStore(
  location: string,
  env: NodeJS.ProcessEnv = process.env,
): WritableBlobStore {
  const scheme = schemeOf(location);
  if (scheme === undefined) return new FolderBlobStore(location);
  if (scheme === "file") return new FolderBlobStore(fileURLToPath(location));
  if (scheme === "http" || scheme === "https") {
    throw new BlobStoreError(
      `blob store ${location}: an http(s) store is read-only; store uploads in a folder, s3:// or r2://`,
    );
  }
  if (scheme !== "s3" && scheme !== "r2") {
    throw new BlobStoreError(
      `blob store ${location}: unknown scheme ${scheme}:// (use a folder, file://, s3://, r2://, http:// or https://)`,
    );
  }
  return openBucket(location, scheme, env);
}

function schemeOf(location: string): string | undefined {
  return /^([a-z][a-z0-9+.-]*):\/\//i.exec(location)?.[1]?.toLowerCase();
}

function openBucket(location: string, scheme: "s3" | "r2", env: NodeJS.ProcessEnv): S3BlobStore {
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
