// API keys and bearer auth: keys stored only as sha256 with a visible prefix, revocation scoped by org and
// by an unambiguous prefix, a revoked key refused once the (at most 30 s) cache expires, admin scope.
import { createHash } from "node:crypto";
import { eq } from "drizzle-orm";
import { Hono } from "hono";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  ADMIN_SCOPE,
  ApiKeyError,
  apiKeyPrefix,
  createApiKey,
  generateApiKey,
  hashApiKey,
  listApiKeys,
  revokeApiKey,
} from "../../gateway/api-keys.ts";
import {
  AuthCache,
  bearerAuth,
  MAX_AUTH_CACHE_MS,
  REFUSED_KEY_CACHE_MS,
  requireScope,
} from "../../gateway/auth.ts";
import type { GatewayEnv } from "../../gateway/context.ts";
import { errorResponse, toApiError } from "../../gateway/errors.ts";
import { apiKeys } from "../../schema/db.ts";
import { createGatewayHarness, type GatewayHarness } from "../support/gateway-harness.ts";

let h: GatewayHarness;
beforeAll(async () => {
  h = await createGatewayHarness();
});
afterAll(() => h.close());

describe("API keys", () => {
  it("are lk_ plus 40 base62 characters, all different", () => {
    const keys = new Set(Array.from({ length: 200 }, generateApiKey));
    expect(keys.size).toBe(200);
    for (const key of keys) expect(key).toMatch(/^lk_[0-9A-Za-z]{40}$/);
  });

  it("hash to the sha256 of the whole key", async () => {
    const key = generateApiKey();
    expect(await hashApiKey(key)).toBe(createHash("sha256").update(key).digest("hex"));
  });

  it("are stored as hash and prefix only", async () => {
    const { key, record } = await createApiKey(h.db, { orgId: "acme", name: "stored" });
    const [row] = await h.db.select().from(apiKeys).where(eq(apiKeys.id, record.id));
    expect(row?.keyHash).toBe(await hashApiKey(key));
    expect(row?.prefix).toBe(apiKeyPrefix(key));
    expect(row?.prefix.length).toBe(11);
    expect(JSON.stringify(row)).not.toContain(key.slice(11));
  });

  it("list per org", async () => {
    const mine = await listApiKeys(h.db, "other");
    expect(mine.length).toBeGreaterThan(0);
    expect(mine.every((k) => k.orgId === "other")).toBe(true);
  });

  it("are revoked by an unambiguous prefix within the org only", async () => {
    const { key } = await createApiKey(h.db, { orgId: "other", name: "to-revoke" });
    await expect(revokeApiKey(h.db, "acme", apiKeyPrefix(key))).rejects.toThrow(ApiKeyError);
    await expect(revokeApiKey(h.db, "other", "lk_")).rejects.toThrow(/at least/);
    await expect(revokeApiKey(h.db, "other", "lk_%%%%")).rejects.toThrow(/no live key/);
    const revoked = await revokeApiKey(h.db, "other", apiKeyPrefix(key));
    expect(revoked.revokedAt).toBeInstanceOf(Date);
    await expect(revokeApiKey(h.db, "other", apiKeyPrefix(key))).rejects.toThrow(/no live key/);
  });

  it("refuse a revocation prefix that matches several keys", async () => {
    const a = await createApiKey(h.db, {
      orgId: "acme",
      name: "a",
      key: `lk_SAMEPREFIXaaaaaaaaaaaaaaaaaaaaa`,
    });
    await createApiKey(h.db, { orgId: "acme", name: "b", key: `lk_SAMEPREFIXbbbbbbbbbbbbbbbbbbbbb` });
    await expect(revokeApiKey(h.db, "acme", "lk_SAME")).rejects.toThrow(/matches 2 keys/);
    expect(a.record.prefix).toBe("lk_SAMEPREF");
  });

  it("refuse a chosen key that does not look like one", async () => {
    await expect(createApiKey(h.db, { orgId: "acme", name: "x", key: "sk-123" })).rejects.toThrow(
      ApiKeyError,
    );
  });
});

describe("bearer auth", () => {
  function appWithClock(now: () => number) {
    const cache = new AuthCache({ now });
    const app = new Hono<GatewayEnv>();
    app.use("*", bearerAuth(h.db, cache));
    app.get("/who", (c) => c.json(c.get("principal")));
    app.get("/admin", requireScope(ADMIN_SCOPE), (c) => c.text("ok"));
    app.onError((error) => errorResponse(toApiError(error)));
    return app;
  }
  const get = (app: Hono<GatewayEnv>, path: string, key: string) =>
    app.request(path, { headers: { authorization: `Bearer ${key}` } });

  it("puts the key's org, id and scopes on the request", async () => {
    const app = appWithClock(Date.now);
    const who = await (await get(app, "/who", h.keys.acmeAdmin)).json();
    expect(who).toMatchObject({ orgId: "acme", scopes: ["admin"], prefix: apiKeyPrefix(h.keys.acmeAdmin) });
  });

  it("stops accepting a revoked key once the cache entry expires, within 30 s", async () => {
    let now = 1_000_000;
    const app = appWithClock(() => now);
    const { key } = await createApiKey(h.db, { orgId: "acme", name: "soon-revoked" });
    expect((await get(app, "/who", key)).status).toBe(200);
    await revokeApiKey(h.db, "acme", apiKeyPrefix(key));
    now += 10_000;
    expect((await get(app, "/who", key)).status).toBe(200);
    now += MAX_AUTH_CACHE_MS;
    const refused = await get(app, "/who", key);
    expect(refused.status).toBe(401);
    expect(await refused.json()).toMatchObject({ error: { code: "invalid_api_key" } });
  });

  it("never caches for longer than 30 s, whatever it is asked", () => {
    expect(new AuthCache({ ttlMs: 3_600_000 }).ttlMs).toBe(MAX_AUTH_CACHE_MS);
  });

  it("accepts a new key at once", async () => {
    const app = appWithClock(Date.now);
    expect((await get(app, "/who", h.keys.other)).status).toBe(200);
    const { key } = await createApiKey(h.db, { orgId: "acme", name: "new" });
    expect((await get(app, "/who", key)).status).toBe(200);
  });

  it("remembers a refused key for 5 s without asking the database, then asks again", async () => {
    let now = 2_000_000;
    const app = appWithClock(() => now);
    // A chosen key, so it can be tried before it exists: the one way a remembered refusal shows.
    const key = generateApiKey();
    expect((await get(app, "/who", key)).status).toBe(401);
    await createApiKey(h.db, { orgId: "acme", name: "late", key });
    now += REFUSED_KEY_CACHE_MS - 1;
    const remembered = await get(app, "/who", key);
    expect(remembered.status).toBe(401);
    expect(await remembered.json()).toMatchObject({ error: { code: "invalid_api_key" } });
    now += 1;
    expect((await get(app, "/who", key)).status).toBe(200);
  });

  it("keeps its good keys however many bad ones it is sent", () => {
    const cache = new AuthCache({ maxEntries: 2 });
    const principal = { keyId: "k", orgId: "acme", prefix: "lk_good", scopes: [] };
    cache.set("good", principal);
    for (let k = 0; k < 10; k++) cache.refuse(`bad-${k}`);
    expect(cache.get("good")).toEqual(principal);
    expect(cache.refusedRecently("bad-9")).toBe(true);
    expect(cache.refusedRecently("bad-0")).toBe(false);
  });

  it("answers 403 on an admin route without the admin scope", async () => {
    const app = appWithClock(Date.now);
    expect((await get(app, "/admin", h.keys.acmeAdmin)).status).toBe(200);
    const refused = await get(app, "/admin", h.keys.acme);
    expect(refused.status).toBe(403);
    expect(await refused.json()).toMatchObject({ error: { type: "permission_error" } });
  });
});
