// Idempotency-Key on non-streaming completions: a retried request with the same key (per org) and the same
// body gets the stored response instead of running, and being billed, twice. A request still running under
// the key answers 409; a key reused with a different body answers 400; only successes are stored, so a
// failed request can be retried under the same key. Keys and answers live in the database
// (idempotency-keys.ts), so every gateway process shares them, and are kept a day.
import type { MiddlewareHandler } from "hono";
import { sha256Hex } from "../core/sha256.ts";
import type { GatewayEnv } from "./context.ts";
import type { GatewayDeps } from "./deps.ts";
import { ApiError, invalidRequest } from "./errors.ts";
import { claimKey, completeKey, IDEMPOTENCY_TTL_MS, releaseKey } from "./idempotency-keys.ts";
import { readBodyText } from "./request-body.ts";

function isStreaming(body: string): boolean {
  try {
    const json: unknown = JSON.parse(body);
    return typeof json === "object" && json !== null && (json as { stream?: unknown }).stream === true;
  } catch {
    return false;
  }
}

export function idempotency(deps: GatewayDeps): MiddlewareHandler<GatewayEnv> {
  return async (c, next) => {
    const header = c.req.header("idempotency-key");
    if (header === undefined) return next();
    if (header.length === 0 || header.length > 255) {
      throw invalidRequest("Idempotency-Key must be 1-255 characters", "Idempotency-Key");
    }
    // Hono keeps the bytes, so the route reads the same body again.
    const body = await readBodyText(c);
    if (isStreaming(body)) return next();
    const { db } = deps;
    const key = JSON.stringify([c.get("principal").orgId, c.req.path, header]);
    const bodyHash = sha256Hex(body);
    const now = deps.now();
    // A run outlives its claim only if its gateway died: the request would have timed out by then.
    const lease = new Date(now + deps.limits.requestTimeoutMs + 60_000);
    const existing = await claimKey(db, key, bodyHash, new Date(now), lease);
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
      return c.body(existing.answer.body, existing.answer.status as 200, {
        "content-type": existing.answer.contentType,
        "idempotent-replayed": "true",
      });
    }
    try {
      await next();
    } catch (error) {
      await releaseKey(db, key);
      throw error;
    }
    if (c.res.status === 200) {
      const answer = {
        status: 200,
        body: await c.res.clone().text(),
        contentType: c.res.headers.get("content-type") ?? "application/json",
      };
      await completeKey(db, key, answer, new Date(deps.now() + IDEMPOTENCY_TTL_MS));
      await deps.idempotencyExpiry.afterWrite(db, deps.log, {
        rows: "idempotency keys",
        expired: "idempotency keys past their day",
      });
    } else {
      await releaseKey(db, key);
    }
  };
}
