// API keys: `lk_` plus 40 random base62 characters, shown once at creation and stored only as the sha256
// of the whole key with a short visible prefix. Creating, listing and revoking them, every query scoped by
// org. Web Crypto's random values and node:crypto's hash, both present on Node and in workerd.
import { and, asc, eq, isNull, like } from "drizzle-orm";
import { sha256Hex } from "../core/sha256.ts";
import type { Db } from "../db/open.ts";
import { type ApiKey, apiKeys, orgs } from "../schema/db.ts";
import type { KeyObject } from "../schema/key-api.ts";

export const API_KEY_PREFIX = "lk_";
/** The scope that opens management routes (adapters, keys). */
export const ADMIN_SCOPE = "admin";
const SECRET_LENGTH = 40;
/** "lk_" plus 8 characters: enough to tell keys apart, far too few to guess the rest. */
const VISIBLE_LENGTH = API_KEY_PREFIX.length + 8;
const BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

export class ApiKeyError extends Error {
  override readonly name = "ApiKeyError";
  /** "not_found": no live key of the org matches; "invalid": the request itself is wrong. */
  constructor(
    message: string,
    readonly kind: "invalid" | "not_found" = "invalid",
  ) {
    super(message);
  }
}

/** A new key: 40 base62 characters ≈ 238 bits from the platform's CSPRNG, drawn without modulo bias. */
export function generateApiKey(): string {
  let secret = "";
  while (secret.length < SECRET_LENGTH) {
    for (const byte of crypto.getRandomValues(new Uint8Array(64))) {
      // 248 = 4 × 62: bytes above it would favour the first characters.
      if (byte < 248 && secret.length < SECRET_LENGTH) secret += BASE62[byte % 62];
    }
  }
  return API_KEY_PREFIX + secret;
}

export function looksLikeApiKey(value: string): boolean {
  return value.startsWith(API_KEY_PREFIX) && /^[0-9A-Za-z]+$/.test(value.slice(API_KEY_PREFIX.length));
}

/** The form of a key createApiKey is given instead of generating one (`luminet dev`'s LUMINET_DEV_API_KEY). */
export const API_KEY_FORMAT = `"${API_KEY_PREFIX}" followed by at least 20 letters or digits`;

export function isWellFormedApiKey(key: string): boolean {
  return looksLikeApiKey(key) && key.length >= API_KEY_PREFIX.length + 20;
}

/** The visible part of a key, stored beside its hash and safe to log. */
export function apiKeyPrefix(key: string): string {
  return key.slice(0, VISIBLE_LENGTH);
}

/** How a key is named to a person: its visible prefix and its name, e.g. "lk_AbC12345… (ci)". */
export function keyLabel(key: { prefix: string; name: string }): string {
  return `${key.prefix}… (${key.name})`;
}

/** sha256 of the whole key, lowercase hex: the only form of a key the database holds. */
export async function hashApiKey(key: string): Promise<string> {
  return sha256Hex(key);
}

export interface CreatedApiKey {
  /** The key itself: show it once, it cannot be recovered. */
  key: string;
  record: ApiKey;
}

export interface CreateApiKeyOptions {
  orgId: string;
  name: string;
  scopes?: string[];
  /** Use this key instead of a random one (`luminet dev`'s LUMINET_DEV_API_KEY); it must look like a key. */
  key?: string;
  /** Most requests per minute through the key; unset or null: no limit. */
  requestsPerMinute?: number | null;
  /** Most tokens (prompt + max_tokens) per minute through the key; unset or null: no limit. */
  tokensPerMinute?: number | null;
}

export interface ApiKeyLimits {
  requestsPerMinute: number | null;
  tokensPerMinute: number | null;
}

function checkLimit(name: string, value: number | null | undefined): void {
  if (value != null && (!Number.isSafeInteger(value) || value < 1 || value > 2_147_483_647)) {
    throw new ApiKeyError(`${name} must be a whole number from 1 to 2147483647, got ${value}`);
  }
}

/** Creates the org when it does not exist yet, named after its id. */
export async function ensureOrg(db: Db, orgId: string, name = orgId): Promise<void> {
  if (!/^[a-z0-9][a-z0-9-]{0,62}$/.test(orgId)) {
    throw new ApiKeyError(
      `org id "${orgId}" must be 1-63 lowercase letters, digits or "-", starting with a letter or digit`,
    );
  }
  await db.insert(orgs).values({ id: orgId, name }).onConflictDoNothing();
}

export async function createApiKey(db: Db, options: CreateApiKeyOptions): Promise<CreatedApiKey> {
  checkLimit("requests per minute", options.requestsPerMinute);
  checkLimit("tokens per minute", options.tokensPerMinute);
  const key = options.key ?? generateApiKey();
  if (!isWellFormedApiKey(key)) throw new ApiKeyError(`an API key must be ${API_KEY_FORMAT}`);
  const [record] = await db
    .insert(apiKeys)
    .values({
      orgId: options.orgId,
      name: options.name,
      keyHash: await hashApiKey(key),
      prefix: apiKeyPrefix(key),
      scopes: options.scopes ?? [],
      requestsPerMinute: options.requestsPerMinute ?? null,
      tokensPerMinute: options.tokensPerMinute ?? null,
    })
    .returning();
  if (!record) throw new ApiKeyError("the database did not return the new key");
  return { key, record };
}

const unixSeconds = (date: Date) => Math.floor(date.getTime() / 1000);

/** A key's record as the admin API returns it and `luminet keys` prints it: never its hash. */
export function keyObject(record: ApiKey): KeyObject {
  return {
    id: record.id,
    object: "api_key",
    org: record.orgId,
    prefix: record.prefix,
    name: record.name,
    scopes: record.scopes,
    rpm: record.requestsPerMinute,
    tpm: record.tokensPerMinute,
    created_at: unixSeconds(record.createdAt),
    last_used_at: record.lastUsedAt === null ? null : unixSeconds(record.lastUsedAt),
    revoked_at: record.revokedAt === null ? null : unixSeconds(record.revokedAt),
  };
}

/** The org's keys, oldest first; revoked ones included (they show when they were revoked). */
export async function listApiKeys(db: Db, orgId: string): Promise<ApiKey[]> {
  return db.select().from(apiKeys).where(eq(apiKeys.orgId, orgId)).orderBy(asc(apiKeys.createdAt));
}

/**
 * The org's one live key whose visible prefix starts with `prefix`. A prefix matching no key or several
 * is refused by name, so a typo never changes the wrong key.
 */
async function liveKeyByPrefix(db: Db, orgId: string, prefix: string): Promise<ApiKey> {
  if (prefix.length < API_KEY_PREFIX.length + 4) {
    throw new ApiKeyError(`give at least ${API_KEY_PREFIX.length + 4} characters of the key's prefix`);
  }
  const pattern = `${prefix.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
  const live = and(eq(apiKeys.orgId, orgId), like(apiKeys.prefix, pattern), isNull(apiKeys.revokedAt));
  const matches = await db.select().from(apiKeys).where(live);
  if (matches.length === 0) {
    throw new ApiKeyError(`org "${orgId}" has no live key starting with "${prefix}"`, "not_found");
  }
  if (matches.length > 1) {
    throw new ApiKeyError(
      `"${prefix}" matches ${matches.length} keys of org "${orgId}" (${matches.map((k) => k.prefix).join(", ")}); give more of the prefix`,
    );
  }
  return matches[0]!;
}

/** Revokes the org's live key whose visible prefix starts with `prefix`. */
export async function revokeApiKey(db: Db, orgId: string, prefix: string): Promise<ApiKey> {
  const match = await liveKeyByPrefix(db, orgId, prefix);
  const [revoked] = await db
    .update(apiKeys)
    .set({ revokedAt: new Date() })
    .where(and(eq(apiKeys.id, match.id), eq(apiKeys.orgId, orgId)))
    .returning();
  if (!revoked) throw new ApiKeyError(`key ${prefix} vanished while being revoked`, "not_found");
  return revoked;
}

/**
 * Sets the per-minute limits of the org's live key whose prefix starts with `prefix`; a limit left
 * undefined keeps its value, null removes it. Gateways apply it within 30 s (their limits cache).
 */
export async function setApiKeyLimits(
  db: Db,
  orgId: string,
  prefix: string,
  limits: Partial<ApiKeyLimits>,
): Promise<ApiKey> {
  checkLimit("requests per minute", limits.requestsPerMinute);
  checkLimit("tokens per minute", limits.tokensPerMinute);
  const match = await liveKeyByPrefix(db, orgId, prefix);
  const [updated] = await db
    .update(apiKeys)
    .set({
      ...(limits.requestsPerMinute !== undefined ? { requestsPerMinute: limits.requestsPerMinute } : {}),
      ...(limits.tokensPerMinute !== undefined ? { tokensPerMinute: limits.tokensPerMinute } : {}),
    })
    .where(and(eq(apiKeys.id, match.id), eq(apiKeys.orgId, orgId)))
    .returning();
  if (!updated) throw new ApiKeyError(`key ${prefix} vanished while its limits were set`, "not_found");
  return updated;
}
