// Idempotency-Key on completions: a retried request with the same key (per org) and the same body gets the
// stored answer instead of running, and being billed, twice. A request still running under the key
// answers 409; a key reused with a different body answers 400; only successes are stored, so a failed
// request can be retried under the same key. A streamed answer is recorded as it goes out and stored once
// its stream completes (its bytes replayed as one event stream); one that ends with an error, whose client
// leaves, or that outgrows MAX_RECORDED_BYTES frees its key instead. Keys and answers live in the database
// (idempotency-keys.ts), so every gateway process shares them, and are kept a day.
import type { Context, MiddlewareHandler } from "hono";
import { sha256Hex } from "../core/sha256.ts";
import type { GatewayEnv } from "./context.ts";
import type { GatewayDeps } from "./deps.ts";
import { ApiError, invalidRequest } from "./errors.ts";
import {
  claimKey,
  completeKey,
  IDEMPOTENCY_TTL_MS,
  releaseKey,
  type StoredAnswer,
} from "./idempotency-keys.ts";
import { readBodyText } from "./request-body.ts";

/** The most of a streamed answer kept for replay; a longer one frees its key when it ends. */
const MAX_RECORDED_BYTES = 8 * 2 ** 20;

export function idempotency(deps: GatewayDeps): MiddlewareHandler<GatewayEnv> {
  return async (c, next) => {
    const header = c.req.header("idempotency-key");
    if (header === undefined) return next();
    if (header.length === 0 || header.length > 255) {
      throw invalidRequest("Idempotency-Key must be 1-255 characters", "Idempotency-Key");
    }
    // Hono keeps the bytes, so the route reads the same body again.
    const body = await readBodyText(c);
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
    const complete = async (answer: StoredAnswer) => {
      await completeKey(db, key, answer, new Date(deps.now() + IDEMPOTENCY_TTL_MS));
      await deps.idempotencyExpiry.afterWrite(db, deps.log, {
        rows: "idempotency keys",
        expired: "idempotency keys past their day",
      });
    };
    const contentType = c.res.headers.get("content-type") ?? "application/json";
    if (c.res.status !== 200) await releaseKey(db, key);
    else if (contentType.startsWith("text/event-stream") && c.res.body) {
      c.res = recordedStream(c.res, {
        // The database write ends the stream, so a Workers request keeps its connection for it.
        ended: (text) =>
          (c.get("streamOutcome") === "complete" && text !== null
            ? complete({ status: 200, body: text, contentType })
            : releaseKey(db, key)
          ).catch((error: unknown) => failedToKeep(c, deps, error)),
        left: () => releaseKey(db, key).catch((error: unknown) => failedToKeep(c, deps, error)),
      });
    } else await complete({ status: 200, body: await c.res.clone().text(), contentType });
  };
}

/** Logged, not thrown: the answer went out; the key's claim runs out with its lease at worst. */
function failedToKeep(c: Context<GatewayEnv>, deps: GatewayDeps, error: unknown): void {
  deps.log.error(
    { requestId: c.get("requestId"), err: error instanceof Error ? error.message : String(error) },
    "could not store or free an Idempotency-Key after a stream",
  );
}

/**
 * `res` with its body passed on as it comes and kept: once it ends, `ended` gets its text (null when it
 * outgrew MAX_RECORDED_BYTES) before the body closes; a client that leaves first calls `left`.
 */
function recordedStream(
  res: Response,
  on: { ended: (text: string | null) => Promise<void>; left: () => Promise<void> },
): Response {
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  let text: string | null = "";
  let bytes = 0;
  const body = new ReadableStream<Uint8Array>({
    async pull(controller) {
      const step = await reader.read();
      if (step.done) {
        await on.ended(text === null ? null : text + decoder.decode());
        controller.close();
        return;
      }
      bytes += step.value.byteLength;
      if (bytes > MAX_RECORDED_BYTES) text = null;
      else if (text !== null) text += decoder.decode(step.value, { stream: true });
      controller.enqueue(step.value);
    },
    async cancel(reason) {
      await reader.cancel(reason);
      await on.left();
    },
  });
  return new Response(body, res);
}
