// Per-key requests-per-minute and tokens-per-minute limits, counted in Postgres so every gateway process
// (Node or Workers) shares one count. A fixed window per key and UTC minute, one row per key
// (api_key_rate_windows): admission is one upsert that starts a new window or adds the request to the
// current one only WHERE the sums stay within the limits, so parallel requests cannot overshoot. A fixed
// window lets a key send up to twice its limit across a minute boundary; that is the price of one row
// and one statement per request.
//
// Tokens are counted at admission as prompt + max_tokens, as OpenAI counts them: the actual count is not
// known until the request ends, and a limit that only saw finished requests would let a burst through.
// The answers carry OpenAI's x-ratelimit-* headers for the limits the key has.
import { and, eq, or, sql } from "drizzle-orm";
import type { Db } from "../db/open.ts";
import { apiKeyRateWindows } from "../schema/db.ts";

export const RATE_WINDOW_MS = 60_000;

export interface RateLimits {
  requestsPerMinute: number | null;
  tokensPerMinute: number | null;
}

/** A key's window after (or, when refused, instead of) counting a request. */
export interface RateWindow {
  /** Unix ms the window began; it resets RATE_WINDOW_MS later. */
  start: number;
  requests: number;
  tokens: number;
}

export type RateDecision =
  | { allowed: true; window: RateWindow }
  /** `window` is the count the request did not join. */
  | { allowed: false; exceeded: "requests" | "tokens"; window: RateWindow };

function windowStart(now: number): number {
  return Math.floor(now / RATE_WINDOW_MS) * RATE_WINDOW_MS;
}

/**
 * Counts one request of `tokens` tokens against the key's current window, unless that would pass a limit.
 * Call only for a key with at least one limit.
 */
export async function countRequest(
  db: Db,
  keyId: string,
  limits: RateLimits,
  tokens: number,
  now: number,
): Promise<RateDecision> {
  const start = windowStart(now);
  // A request larger than the whole per-minute budget would never fit: refuse it without counting.
  if (limits.tokensPerMinute !== null && tokens > limits.tokensPerMinute) {
    return { allowed: false, exceeded: "tokens", window: await currentWindow(db, keyId, start) };
  }
  const w = apiKeyRateWindows;
  // A gateway whose clock lags counts into the newer window rather than winding it back.
  const fresh = sql`excluded.window_start > ${w.windowStart}`;
  const fits = and(
    limits.requestsPerMinute === null ? undefined : sql`${w.requests} + 1 <= ${limits.requestsPerMinute}`,
    limits.tokensPerMinute === null
      ? undefined
      : sql`${w.tokens} + excluded.tokens <= ${limits.tokensPerMinute}::bigint`,
  );
  const [counted] = await db
    .insert(w)
    .values({ apiKeyId: keyId, windowStart: new Date(start), requests: 1, tokens })
    .onConflictDoUpdate({
      target: w.apiKeyId,
      set: {
        windowStart: sql`greatest(${w.windowStart}, excluded.window_start)`,
        requests: sql`case when ${fresh} then 1 else ${w.requests} + 1 end`,
        tokens: sql`case when ${fresh} then excluded.tokens else ${w.tokens} + excluded.tokens end`,
      },
      setWhere: or(fresh, fits),
    })
    .returning({ start: w.windowStart, requests: w.requests, tokens: w.tokens });
  if (counted) {
    return { allowed: true, window: { ...counted, start: counted.start.getTime() } };
  }
  const window = await currentWindow(db, keyId, start);
  const requestsFull = limits.requestsPerMinute !== null && window.requests + 1 > limits.requestsPerMinute;
  return { allowed: false, exceeded: requestsFull ? "requests" : "tokens", window };
}

/** What the key's window starting at `start` (or a later one) holds; nothing where it last counted earlier. */
async function currentWindow(db: Db, keyId: string, start: number): Promise<RateWindow> {
  const w = apiKeyRateWindows;
  const [current] = await db
    .select({ start: w.windowStart, requests: w.requests, tokens: w.tokens })
    .from(w)
    .where(eq(w.apiKeyId, keyId));
  if (!current || current.start.getTime() < start) return { start, requests: 0, tokens: 0 };
  return { ...current, start: current.start.getTime() };
}

/** A duration as OpenAI writes its reset headers: "850ms", "17s", "1m0s". */
export function formatReset(ms: number): string {
  const clamped = Math.max(0, Math.ceil(ms));
  if (clamped < 1000) return `${clamped}ms`;
  const seconds = clamped / 1000;
  if (seconds < 60) return `${Number(seconds.toFixed(3))}s`;
  return `${Math.floor(seconds / 60)}m${Number((seconds % 60).toFixed(3))}s`;
}

/** Milliseconds until the window resets. */
export function untilReset(window: RateWindow, now: number): number {
  return Math.max(0, window.start + RATE_WINDOW_MS - now);
}

/** OpenAI's x-ratelimit-{limit,remaining,reset}-{requests,tokens} for the limits the key has. */
export function rateLimitHeaders(
  limits: RateLimits,
  window: RateWindow,
  now: number,
): Record<string, string> {
  const reset = formatReset(untilReset(window, now));
  const headers: Record<string, string> = {};
  if (limits.requestsPerMinute !== null) {
    headers["x-ratelimit-limit-requests"] = String(limits.requestsPerMinute);
    headers["x-ratelimit-remaining-requests"] = String(
      Math.max(0, limits.requestsPerMinute - window.requests),
    );
    headers["x-ratelimit-reset-requests"] = reset;
  }
  if (limits.tokensPerMinute !== null) {
    headers["x-ratelimit-limit-tokens"] = String(limits.tokensPerMinute);
    headers["x-ratelimit-remaining-tokens"] = String(Math.max(0, limits.tokensPerMinute - window.tokens));
    headers["x-ratelimit-reset-tokens"] = reset;
  }
  return headers;
}
