// Admission against a caller's limits, before a request goes to a worker: its key's requests and tokens
// per minute (gateway/rate-limit.ts), then its org's monthly token quota, reserved for the request's most
// tokens (meter/token-quota.ts). Over a limit is a 429 in OpenAI's shape: `rate_limit_exceeded` with
// Retry-After and the x-ratelimit-* headers, or `insufficient_quota`. An admitted request gets the headers
// and a hold on the quota that the meter settles, or that `release()` gives back when the request fails
// before a worker has it.
import {
  quotaStatus,
  releaseReservation,
  reserveQuota,
  sweepExpiredReservations,
} from "../meter/token-quota.ts";
import type { Principal } from "./auth.ts";
import type { GatewayDeps } from "./deps.ts";
import { ApiError } from "./errors.ts";
import { countRequest, formatReset, rateLimitHeaders, untilReset } from "./rate-limit.ts";

/**
 * How long past the request's own deadline a reservation holds without a usage event. The meter may lag
 * behind the worker (it batches, it may be restarting); released too early, the org could briefly pass its
 * quota by what was still in flight.
 */
export const QUOTA_HOLD_GRACE_MS = 5 * 60_000;

export interface LimitsAdmission {
  /** x-ratelimit-* headers for the response; empty when the key has no per-minute limits. */
  headers: Record<string, string>;
  /** Gives the quota reservation back, if one was made: call when the request never reached a worker. */
  release(): Promise<void>;
}

export type LimitsDeps = Pick<GatewayDeps, "db" | "callerLimits" | "now" | "limits">;

const NOTHING_HELD = async () => {};

function rateLimited(message: string, headers: Record<string, string>): ApiError {
  return new ApiError(429, "rate_limit_error", message, "rate_limit_exceeded", null, headers);
}

/**
 * Throws 429 when the request does not fit the caller's limits. `runs` are its runs on workers (one per
 * choice, gateway/generation.ts), each with the most tokens it can use: the rate limits count one request
 * of their sum, and the quota holds a reservation per run, which that run's usage event settles.
 */
export async function admitWithinLimits(
  deps: LimitsDeps,
  caller: Principal,
  runs: readonly { requestId: string; tokens: number }[],
): Promise<LimitsAdmission> {
  const tokens = runs.reduce((sum, run) => sum + run.tokens, 0);
  const limits = await deps.callerLimits.get(deps.db, caller.keyId);
  let headers: Record<string, string> = {};
  if (limits.requestsPerMinute !== null || limits.tokensPerMinute !== null) {
    const now = deps.now();
    const decision = await countRequest(deps.db, caller.keyId, limits, tokens, now);
    headers = rateLimitHeaders(limits, decision.window, now);
    if (!decision.allowed) {
      const wait = untilReset(decision.window, now);
      const retry = { ...headers, "retry-after": String(Math.max(1, Math.ceil(wait / 1000))) };
      if (decision.exceeded === "requests") {
        throw rateLimited(
          `Rate limit reached for requests per min (RPM) on API key ${caller.prefix}…: Limit ` +
            `${limits.requestsPerMinute}, Used ${decision.window.requests}, Requested 1. ` +
            `Please try again in ${formatReset(wait)}.`,
          retry,
        );
      }
      const limit = limits.tokensPerMinute ?? 0;
      if (tokens > limit) {
        // No Retry-After: waiting cannot make it fit (a batch runner fails the line rather than retry it).
        throw rateLimited(
          `Request too large for tokens per min (TPM) on API key ${caller.prefix}…: Limit ${limit}, ` +
            `Requested ${tokens} (prompt + max_tokens). Lower max_tokens or shorten the prompt.`,
          headers,
        );
      }
      throw rateLimited(
        `Rate limit reached for tokens per min (TPM) on API key ${caller.prefix}…: Limit ${limit}, ` +
          `Used ${decision.window.tokens}, Requested ${tokens} (prompt + max_tokens). ` +
          `Please try again in ${formatReset(wait)}.`,
        retry,
      );
    }
  }
  if (limits.monthlyTokenQuota === null) return { headers, release: NOTHING_HELD };
  const reserve = (run: { requestId: string; tokens: number }) =>
    reserveQuota(deps.db, {
      requestId: run.requestId,
      orgId: caller.orgId,
      tokens: run.tokens,
      now: deps.now(),
      holdMs: deps.limits.requestTimeoutMs + QUOTA_HOLD_GRACE_MS,
    });
  const release = async (held: readonly { requestId: string }[]) => {
    for (const run of held) await releaseReservation(deps.db, run.requestId);
  };
  const held: { requestId: string }[] = [];
  for (const run of runs) {
    // Out of room: first give back what expired reservations still hold, then try once more.
    const reserved =
      (await reserve(run)) ||
      ((await sweepExpiredReservations(deps.db, caller.orgId, deps.now())) > 0 && (await reserve(run)));
    if (!reserved) {
      await release(held);
      throw await quotaExceeded(deps, caller.orgId, tokens);
    }
    held.push(run);
  }
  return { headers, release: () => release(held) };
}

async function quotaExceeded(deps: LimitsDeps, orgId: string, tokens: number): Promise<ApiError> {
  const status = await quotaStatus(deps.db, orgId, deps.now());
  const room =
    status?.quota != null
      ? ` Org "${orgId}" has ${status.remaining} of its ${status.quota}-token quota for ${status.month} left ` +
        `(${status.used} used, ${status.reserved} held by requests in flight); this request needs up to ` +
        `${tokens} (prompt + max_tokens).`
      : "";
  return new ApiError(
    429,
    "insufficient_quota",
    `You exceeded your current quota, please check your plan and billing details.${room} ` +
      "Lower max_tokens, wait for requests in flight to finish, or ask for a larger quota.",
    "insufficient_quota",
  );
}
