// `luminet dev`'s demo key: LUMINET_DEV_API_KEY sets it, the key it replaces stops working, and the home
// folder keeps the key in use for a start without the variable.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { and, eq, isNull } from "drizzle-orm";
import { afterAll, beforeAll, expect, it } from "vitest";
import type { Db } from "../../db/open.ts";
import { ensureOrg, hashApiKey } from "../../gateway/api-keys.ts";
import { DEV_ORG, useDevApiKey } from "../../gateway/dev-stack.ts";
import { apiKeys } from "../../schema/db.ts";
import { openMigratedPglite } from "../support/migrated-pglite.ts";

let db: Db;
const home = mkdtempSync(join(tmpdir(), "luminet-dev-key-"));

beforeAll(async () => {
  db = await openMigratedPglite();
  await ensureOrg(db, DEV_ORG, "Demo");
});
afterAll(async () => {
  await db.close();
  rmSync(home, { recursive: true, force: true });
});

const liveKeys = async () =>
  db
    .select({ hash: apiKeys.keyHash })
    .from(apiKeys)
    .where(and(eq(apiKeys.orgId, DEV_ORG), isNull(apiKeys.revokedAt)));

it("generates a key once, sets the variable's in its place, and keeps the one in use", async () => {
  const generated = await useDevApiKey(db, home, undefined);
  expect(await useDevApiKey(db, home, undefined)).toBe(generated);
  expect(await liveKeys()).toEqual([{ hash: await hashApiKey(generated) }]);

  const chosen = "lk_chosenchosenchosenchosen1";
  expect(await useDevApiKey(db, home, chosen)).toBe(chosen);
  // The generated key no longer works: only the chosen one is live.
  expect(await liveKeys()).toEqual([{ hash: await hashApiKey(chosen) }]);
  expect(readFileSync(join(home, "dev-api-key"), "utf8").trim()).toBe(chosen);
  // A start without the variable keeps the chosen key.
  expect(await useDevApiKey(db, home, undefined)).toBe(chosen);
  expect(await liveKeys()).toEqual([{ hash: await hashApiKey(chosen) }]);
});
