// The limits that apply to a caller: its key's requests and tokens per minute, its org's monthly token
// quota, whether its org may use the priority tier, and what its org's stored responses hold against their
// limit (response-storage-quota.ts), read together and cached per key for at most 30 s,
// as the key itself is (gateway/auth.ts). A limit changed from the CLI or another gateway takes effect
// within that; one changed through this process's admin API at once (`forget`). Most callers have no
// limits: one cached lookup is then all admission costs.
import { eq, sql } from "drizzle-orm";
import type { Db } from "../db/open.ts";
import { apiKeys, orgs } from "../schema/db.ts";
import { MAX_AUTH_CACHE_MS } from "./auth.ts";

export interface CallerLimits {
  requestsPerMinute: number | null;
  tokensPerMinute: number | null;
  monthlyTokenQuota: number | null;
  /** Its org's requests for service_tier "priority" get it (orgs.priority_tier). */
  priorityTier: boolean;
  /** What its org's stored responses and chat completions hold, and its org's own limit for them (null: the gateway's). */
  responseBytes: number;
  responseStorageLimit: number | null;
}

export const NO_LIMITS: CallerLimits = {
  requestsPerMinute: null,
  tokensPerMinute: null,
  monthlyTokenQuota: null,
  priorityTier: true,
  responseBytes: 0,
  responseStorageLimit: null,
};

export interface CallerLimitsCacheOptions {
  ttlMs?: number;
  maxEntries?: number;
  now?: () => number;
}

export class CallerLimitsCache {
  readonly ttlMs: number;
  readonly #maxEntries: number;
  readonly #now: () => number;
  readonly #entries = new Map<string, { limits: CallerLimits; expiresAt: number }>();

  constructor(options: CallerLimitsCacheOptions = {}) {
    this.ttlMs = Math.min(options.ttlMs ?? MAX_AUTH_CACHE_MS, MAX_AUTH_CACHE_MS);
    this.#maxEntries = options.maxEntries ?? 10_000;
    this.#now = options.now ?? Date.now;
  }

  async get(db: Db, keyId: string): Promise<CallerLimits> {
    const entry = this.#entries.get(keyId);
    if (entry && entry.expiresAt > this.#now()) return entry.limits;
    const [row] = await db
      .select({
        requestsPerMinute: apiKeys.requestsPerMinute,
        tokensPerMinute: apiKeys.tokensPerMinute,
        monthlyTokenQuota: orgs.monthlyTokenQuota,
        priorityTier: orgs.priorityTier,
        // Named in full: drizzle would leave the correlated columns unqualified inside the subquery.
        responseBytes:
          sql<number>`(select coalesce(sum("response_storage"."bytes"), 0) from "response_storage"
          where "response_storage"."org_id" = "api_keys"."org_id")`.mapWith(Number),
        responseStorageLimit: orgs.responseStorageLimit,
      })
      .from(apiKeys)
      .innerJoin(orgs, eq(orgs.id, apiKeys.orgId))
      .where(eq(apiKeys.id, keyId));
    // A key deleted since it was authenticated: no limits of its own; auth refuses it within 30 s.
    const limits = row ?? NO_LIMITS;
    this.#entries.delete(keyId);
    if (this.#entries.size >= this.#maxEntries) {
      const oldest = this.#entries.keys().next();
      if (!oldest.done) this.#entries.delete(oldest.value);
    }
    this.#entries.set(keyId, { limits, expiresAt: this.#now() + this.ttlMs });
    return limits;
  }

  /** Drops one key's cached limits, so its next request reads them afresh (a change made here). */
  forget(keyId: string): void {
    this.#entries.delete(keyId);
  }
}
