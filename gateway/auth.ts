// Bearer-key authentication: hash the key, look it up, cache the answer for at most 30 s (so a revoked key
// stops working within that), and put the caller's org, key id and scopes on the context. A key refused
// is remembered for 5 s, so a client that keeps sending a revoked or mistyped key costs the database one
// lookup per 5 s rather than one per request. Only the key's hash and prefix are ever held or logged.
import { and, eq, isNull } from "drizzle-orm";
import type { MiddlewareHandler } from "hono";
import type { Db } from "../db/open.ts";
import { apiKeys } from "../schema/db.ts";
import { apiKeyPrefix, hashApiKey, looksLikeApiKey } from "./api-keys.ts";
import type { GatewayEnv } from "./context.ts";
import { invalidApiKey, permissionDenied } from "./errors.ts";

/** Who is calling: every query a route runs is scoped by `orgId`. */
export interface Principal {
  keyId: string;
  orgId: string;
  /** The key's visible prefix, for logs. */
  prefix: string;
  scopes: readonly string[];
}

export const MAX_AUTH_CACHE_MS = 30_000;

/**
 * How long a refused key stays refused without asking the database again. Safe because a key Luminet
 * generates is random, so it cannot have been tried before it exists, and a revoked key never comes back.
 */
export const REFUSED_KEY_CACHE_MS = 5_000;

export interface AuthCacheOptions {
  /** How long a looked-up key is trusted without asking the database again; at most 30 s. */
  ttlMs?: number;
  maxEntries?: number;
  now?: () => number;
}

/**
 * Known-good keys by hash, and refused ones for REFUSED_KEY_CACHE_MS. Each map holds at most `maxEntries`,
 * so many different bad keys cannot push the good ones out.
 */
export class AuthCache {
  readonly ttlMs: number;
  readonly #maxEntries: number;
  readonly #now: () => number;
  readonly #entries = new Map<string, { principal: Principal; expiresAt: number }>();
  /** Refused keys' hashes, with when each may be asked about again. */
  readonly #refused = new Map<string, number>();

  constructor(options: AuthCacheOptions = {}) {
    this.ttlMs = Math.min(options.ttlMs ?? MAX_AUTH_CACHE_MS, MAX_AUTH_CACHE_MS);
    this.#maxEntries = options.maxEntries ?? 10_000;
    this.#now = options.now ?? Date.now;
  }

  get(hash: string): Principal | undefined {
    const entry = this.#entries.get(hash);
    if (!entry) return undefined;
    if (entry.expiresAt <= this.#now()) {
      this.#entries.delete(hash);
      return undefined;
    }
    return entry.principal;
  }

  set(hash: string, principal: Principal): void {
    dropOldestWhenFull(this.#entries, this.#maxEntries);
    this.#entries.set(hash, { principal, expiresAt: this.#now() + this.ttlMs });
  }

  /** Whether this key was refused less than REFUSED_KEY_CACHE_MS ago. */
  refusedRecently(hash: string): boolean {
    const until = this.#refused.get(hash);
    if (until === undefined) return false;
    if (until > this.#now()) return true;
    this.#refused.delete(hash);
    return false;
  }

  refuse(hash: string): void {
    this.#refused.delete(hash);
    dropOldestWhenFull(this.#refused, this.#maxEntries);
    this.#refused.set(hash, this.#now() + REFUSED_KEY_CACHE_MS);
  }

  /** Drops one key, so this process asks the database again on its next use (a revocation made here). */
  forget(hash: string): void {
    this.#entries.delete(hash);
  }
}

/** Makes room for one more entry; Maps iterate in insertion order, so the first entry is the oldest. */
function dropOldestWhenFull(map: Map<string, unknown>, maxEntries: number): void {
  if (map.size < maxEntries) return;
  const oldest = map.keys().next();
  if (!oldest.done) map.delete(oldest.value);
}

/** The live key with this hash, marking it used; null when there is none or it was revoked. */
async function lookUp(db: Db, hash: string): Promise<Principal | null> {
  const [row] = await db
    .update(apiKeys)
    .set({ lastUsedAt: new Date() })
    .where(and(eq(apiKeys.keyHash, hash), isNull(apiKeys.revokedAt)))
    .returning({ id: apiKeys.id, orgId: apiKeys.orgId, prefix: apiKeys.prefix, scopes: apiKeys.scopes });
  return row ? { keyId: row.id, orgId: row.orgId, prefix: row.prefix, scopes: row.scopes } : null;
}

export async function authenticate(db: Db, cache: AuthCache, authorization: string | undefined) {
  if (!authorization) {
    throw invalidApiKey(
      "You didn't provide an API key. Send it in the Authorization header as `Bearer lk_...`.",
    );
  }
  const match = /^Bearer\s+(\S+)\s*$/i.exec(authorization);
  const key = match?.[1];
  if (!key || !looksLikeApiKey(key)) {
    throw invalidApiKey("The Authorization header must be `Bearer lk_...` with a Luminet API key.");
  }
  const hash = await hashApiKey(key);
  const cached = cache.get(hash);
  if (cached) return cached;
  const refused = () => invalidApiKey(`Incorrect or revoked API key provided: ${apiKeyPrefix(key)}…`);
  if (cache.refusedRecently(hash)) throw refused();
  const principal = await lookUp(db, hash);
  if (!principal) {
    cache.refuse(hash);
    throw refused();
  }
  cache.set(hash, principal);
  return principal;
}

/**
 * The key an in-process request runs as, put on the app's env by the batch runner (batch-runner.ts): a
 * symbol, so no HTTP request can carry it. Such a request is a Batch API line (billed at the batch price).
 */
export const RUN_AS = Symbol("luminet.runAs");

/**
 * Beside RUN_AS, for a background response's run: the id key the response was created under, so the run
 * answers (and stores) that response rather than a new one.
 */
export const RESPONSE_KEY = Symbol("luminet.responseKey");

/**
 * Beside RUN_AS: the request id to run under instead of a fresh one (a batch line's, the same each time
 * the line is taken again after its runner died, so the meter bills it once).
 */
export const REQUEST_ID = Symbol("luminet.requestId");

/** What the batch runner puts on the env of a request it sends in process. */
export interface RunEnv {
  [RUN_AS]: Principal;
  [RESPONSE_KEY]?: string;
  [REQUEST_ID]?: string;
}

export function bearerAuth(db: Db, cache: AuthCache): MiddlewareHandler<GatewayEnv> {
  return async (c, next) => {
    const run = c.env as Partial<RunEnv> | undefined;
    const runAs = run?.[RUN_AS];
    // A background response is billed as a live request; a batch line at the batch price.
    if (runAs && !run?.[RESPONSE_KEY]) c.set("batch", true);
    if (run?.[RESPONSE_KEY]) c.set("responseKey", run[RESPONSE_KEY]);
    c.set("principal", runAs ?? (await authenticate(db, cache, c.req.header("authorization"))));
    await next();
  };
}

/** The live key with this id as a principal, without marking it used; null when revoked or unknown. */
export async function principalOfKey(db: Db, keyId: string): Promise<Principal | null> {
  const [row] = await db
    .select({ id: apiKeys.id, orgId: apiKeys.orgId, prefix: apiKeys.prefix, scopes: apiKeys.scopes })
    .from(apiKeys)
    .where(and(eq(apiKeys.id, keyId), isNull(apiKeys.revokedAt)));
  return row ? { keyId: row.id, orgId: row.orgId, prefix: row.prefix, scopes: row.scopes } : null;
}

/**
 * Refuses an `org` query parameter naming another org than the caller's key's: every route works on the
 * caller's own org, and a script that names a different one should hear so rather than get the key's org.
 */
export const callerOrgOnly: MiddlewareHandler<GatewayEnv> = async (c, next) => {
  const own = c.get("principal").orgId;
  const named = c.req.query("org");
  if (named !== undefined && named !== own) {
    throw permissionDenied(`This API key belongs to org '${own}' and cannot act on org '${named}'.`);
  }
  await next();
};

/** For management routes: 403 unless the caller's key carries the scope. */
export function requireScope(scope: string): MiddlewareHandler<GatewayEnv> {
  return async (c, next) => {
    if (!c.get("principal").scopes.includes(scope)) {
      throw permissionDenied(`This route needs an API key with the "${scope}" scope.`);
    }
    await next();
  };
}
