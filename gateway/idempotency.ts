// Idempotency-Key on non-streaming completions: a retried request with the same key (per org) and the same
// body gets the stored response instead of running, and being billed, twice. A request still running under
// the key answers 409; a key reused with a different body answers 400; only successes are stored, so a
// failed request can be retried under the same key. The store is an interface: MemoryIdempotencyStore
// serves one process (Node, `luminet dev`); several gateways need a shared one.
import type { MiddlewareHandler } from "hono";
import type { GatewayEnv } from "./context.ts";
import { ApiError, invalidRequest } from "./errors.ts";

export const IDEMPOTENCY_TTL_MS = 24 * 60 * 60_000;

export interface StoredResponse {
  status: number;
  body: string;
  contentType: string;
}

export type IdempotencyEntry =
  | { state: "running"; bodyHash: string }
  | { state: "done"; bodyHash: string; response: StoredResponse };

export interface IdempotencyStore {
  /** Claims the key for a new run; returns the existing entry instead when there is one. */
  claim(key: string, bodyHash: string): Promise<IdempotencyEntry | null>;
  complete(key: string, response: StoredResponse): Promise<void>;
  /** Releases a claim whose run failed, so a retry runs again. */
  release(key: string): Promise<void>;
}

export class MemoryIdempotencyStore implements IdempotencyStore {
  readonly #entries = new Map<string, { entry: IdempotencyEntry; expiresAt: number }>();

  constructor(
    private readonly now: () => number = Date.now,
    private readonly ttlMs = IDEMPOTENCY_TTL_MS,
    private readonly maxEntries = 100_000,
  ) {}

  async claim(key: string, bodyHash: string): Promise<IdempotencyEntry | null> {
    const found = this.#entries.get(key);
    if (found && found.expiresAt > this.now()) return found.entry;
    if (this.#entries.size >= this.maxEntries) {
      const oldest = this.#entries.keys().next();
      if (!oldest.done) this.#entries.delete(oldest.value);
    }
    this.#entries.set(key, { entry: { state: "running", bodyHash }, expiresAt: this.now() + this.ttlMs });
    return null;
  }

  async complete(key: string, response: StoredResponse): Promise<void> {
    const found = this.#entries.get(key);
    if (!found) return;
    found.entry = { state: "done", bodyHash: found.entry.bodyHash, response };
    found.expiresAt = this.now() + this.ttlMs;
  }

  async release(key: string): Promise<void> {
    this.#entries.delete(key);
  }
}

async function sha256Hex(text: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

function isStreaming(body: string): boolean {
  try {
    const json: unknown = JSON.parse(body);
    return typeof json === "object" && json !== null && (json as { stream?: unknown }).stream === true;
  } catch {
    return false;
  }
}

export function idempotency(store: IdempotencyStore): MiddlewareHandler<GatewayEnv> {
  return async (c, next) => {
    const header = c.req.header("idempotency-key");
    if (header === undefined) return next();
    if (header.length === 0 || header.length > 255) {
      throw invalidRequest("Idempotency-Key must be 1-255 characters", "Idempotency-Key");
    }
    // Hono keeps the text, so the route reads the same body again.
    const body = await c.req.text();
    if (isStreaming(body)) return next();
    const key = `${c.get("principal").orgId}\0${c.req.path}\0${header}`;
    const bodyHash = await sha256Hex(body);
    const existing = await store.claim(key, bodyHash);
    if (existing) {
      if (existing.bodyHash !== bodyHash) {
        throw invalidRequest(
          "This Idempotency-Key was used with a different request body.",
          "Idempotency-Key",
          "idempotency_key_reused",
        );
      }
      if (existing.state === "running") {
        throw new ApiError(
          409,
          "invalid_request_error",
          "A request with this Idempotency-Key is still running; retry after it finishes.",
          "idempotency_key_in_use",
        );
      }
      return c.body(existing.response.body, existing.response.status as 200, {
        "content-type": existing.response.contentType,
        "idempotent-replayed": "true",
      });
    }
    try {
      await next();
    } catch (error) {
      await store.release(key);
      throw error;
    }
    if (c.res.status === 200) {
      const response: StoredResponse = {
        status: 200,
        body: await c.res.clone().text(),
        contentType: c.res.headers.get("content-type") ?? "application/json",
      };
      await store.complete(key, response);
    } else {
      await store.release(key);
    }
  };
}
