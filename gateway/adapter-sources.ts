// Adapter sources: URLs the gateway fetches an adapter from on an admin's behalf (POST /v1/adapters with
// "source"). A caller who could name any URL would make the gateway reach whatever it can reach, internal
// services included (SSRF), so a source must lie under a prefix its operator registered
// (--adapter-sources / LUMINET_ADAPTER_SOURCES): the same scheme and host (or bucket), a path under the
// prefix's path by whole segments, and for s3:// and r2:// the same query, since it names the endpoint the
// gateway connects to (an http(s) query changes nothing about where the gateway connects, so signed CDN
// URLs pass). Redirects are followed only to registered locations. https:// is read with HttpBlobStore,
// s3:// and r2:// with openBlobStore and the gateway's own credentials, as workers read their --blobs.
import { join } from "node:path";
import {
  ADAPTER_FILES,
  type BlobStore,
  BlobStoreError,
  BlobTooLargeError,
  HttpBlobStore,
  openBlobStore,
} from "../worker/adapters/blob-store.ts";
import { ApiError, invalidRequest } from "./errors.ts";

const SCHEMES = new Set(["http:", "https:", "s3:", "r2:"]);

/** What a source held: a PEFT folder (both files fetched) or one .safetensors (fetched as the weights). */
export type SourceLayout = "folder" | "file";

/** A URL's path as decoded segments, a trailing slash dropped; null when a segment is empty, . or .. */
function pathSegments(url: URL): string[] | null {
  const raw = url.pathname.split("/").slice(1);
  if (raw.at(-1) === "") raw.pop();
  const segments: string[] = [];
  for (const segment of raw) {
    let decoded: string;
    try {
      decoded = decodeURIComponent(segment);
    } catch {
      return null;
    }
    if (["", ".", ".."].includes(decoded) || /[/\\\0]/.test(decoded)) return null;
    segments.push(decoded);
  }
  return segments;
}

function sortedQuery(url: URL): string {
  return JSON.stringify(
    [...url.searchParams].sort(([a, x], [b, y]) => a.localeCompare(b) || x.localeCompare(y)),
  );
}

const isBucket = (url: URL) => url.protocol === "s3:" || url.protocol === "r2:";

function under(url: URL, prefix: URL): boolean {
  if (url.protocol !== prefix.protocol || url.host.toLowerCase() !== prefix.host.toLowerCase()) return false;
  if (url.username || url.password) return false;
  if (isBucket(url) && sortedQuery(url) !== sortedQuery(prefix)) return false;
  const path = pathSegments(url);
  // A registered prefix's segments were checked when it was registered.
  const root = pathSegments(prefix) ?? [];
  return path !== null && root.every((segment, i) => path[i] === segment);
}

/** The source's message as the caller sees it: what the source said, never the gateway's credentials. */
function unavailable(source: string, error: BlobStoreError): ApiError {
  return invalidRequest(
    `Could not fetch the adapter from ${source}: ${error.message}`,
    "source",
    "source_unavailable",
  );
}

/** The prefixes of a comma-separated list (`--adapter-sources`, LUMINET_ADAPTER_SOURCES); blanks dropped. */
export function sourcePrefixes(list: string | undefined): string[] {
  return (list ?? "")
    .split(",")
    .map((prefix) => prefix.trim())
    .filter(Boolean);
}

export class AdapterSources {
  readonly #prefixes: URL[];

  /** Throws on a prefix that is not an http(s), s3 or r2 URL, or a bucket without credentials. */
  constructor(
    prefixes: readonly string[],
    private readonly env: NodeJS.ProcessEnv = process.env,
  ) {
    this.#prefixes = prefixes.map((written) => {
      let url: URL;
      try {
        url = new URL(written);
      } catch {
        throw new Error(`adapter source ${written}: not a URL`);
      }
      if (!SCHEMES.has(url.protocol) || url.username || url.password || pathSegments(url) === null) {
        throw new Error(
          `adapter source ${written}: expected an https://, s3:// or r2:// URL prefix without credentials or . and .. segments`,
        );
      }
      if (isBucket(url)) openBlobStore(url.href, env);
      return url;
    });
  }

  /** Whether `url` lies under a registered prefix. */
  allows(url: URL): boolean {
    return this.#prefixes.some((prefix) => under(url, prefix));
  }

  /**
   * Fetches the adapter at `source` into the folder `dir` (adapter_model.safetensors, and
   * adapter_config.json for a folder) within `maxBytes` in all. Throws ApiError: 400 for a source that is
   * malformed, not registered or unavailable (with what it answered), 413 over `maxBytes`.
   */
  async fetchInto(source: string, dir: string, maxBytes: number): Promise<SourceLayout> {
    const { store, file } = this.#open(source);
    const limits = { redirectAllowed: (url: URL) => this.allows(url) };
    try {
      if (file !== null) {
        await store.fetchFile(file, join(dir, ADAPTER_FILES[1]), { ...limits, maxBytes });
        return "file";
      }
      let left = maxBytes;
      for (const name of ADAPTER_FILES) {
        left -= await store.fetchFile(name, join(dir, name), { ...limits, maxBytes: left });
      }
      return "folder";
    } catch (error) {
      if (error instanceof BlobTooLargeError) {
        throw new ApiError(
          413,
          "invalid_request_error",
          `The adapter at ${source} is larger than the cap of ${maxBytes} bytes.`,
          "request_too_large",
          "source",
        );
      }
      if (error instanceof BlobStoreError) throw unavailable(source, error);
      throw error;
    }
  }

  /** The store rooted at the source's folder, and the file's name when the source is one .safetensors. */
  #open(source: string): { store: BlobStore; file: string | null } {
    let url: URL;
    try {
      url = new URL(source);
    } catch {
      throw invalidRequest(`Invalid 'source': '${source}' is not a URL.`, "source");
    }
    if (!SCHEMES.has(url.protocol)) {
      throw invalidRequest(
        `Invalid 'source': '${source}' must be an https://, s3:// or r2:// URL of a PEFT folder or a .safetensors file.`,
        "source",
      );
    }
    if (this.#prefixes.length === 0) {
      throw invalidRequest(
        "This gateway fetches adapters from no source URLs; its operator registers the allowed URL prefixes with --adapter-sources (LUMINET_ADAPTER_SOURCES). Upload the adapter instead.",
        "source",
        "source_not_registered",
      );
    }
    const segments = pathSegments(url);
    if (segments === null || !this.allows(url)) {
      throw invalidRequest(
        `Invalid 'source': ${source} is not under a URL prefix this gateway's operator registered for adapter sources.`,
        "source",
        "source_not_registered",
      );
    }
    const last = segments.at(-1);
    const file = last?.endsWith(".safetensors") ? last : null;
    const folder = new URL(url);
    if (file !== null) folder.pathname = url.pathname.slice(0, url.pathname.lastIndexOf("/") + 1);
    const store = isBucket(folder) ? openBlobStore(folder.href, this.env) : new HttpBlobStore(folder);
    return { store, file };
  }
}
