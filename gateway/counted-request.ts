// Requests that do work without running on a worker — tokenizing, counting a Responses request's input
// tokens, uploading a file, creating a batch or a conversation, adding items to one — count against the
// caller's key's requests per minute as an inference request does (usage-limits.ts), with no tokens: a key
// held to 60 requests a minute cannot send 10,000 tokenizations a minute instead. Over the limit is the
// same 429 with Retry-After; within it, the answer carries the same x-ratelimit-* headers.
import type { MiddlewareHandler } from "hono";
import type { GatewayEnv } from "./context.ts";
import { admitWithinLimits, type LimitsDeps } from "./usage-limits.ts";

export function countedRequest(deps: LimitsDeps): MiddlewareHandler<GatewayEnv> {
  return async (c, next) => {
    // No runs on workers: one request of no tokens, and nothing held against the monthly quota.
    const { headers } = await admitWithinLimits(deps, c.get("principal"), []);
    await next();
    for (const [name, value] of Object.entries(headers)) c.res.headers.set(name, value);
  };
}
