// Waiving a batch line's attempt that runs again (meter/waived-usage.ts), with the meter's own writer: an
// attempt already billed is taken back out of its cost, the usage report and the org's monthly quota; one
// waived before its usage event arrives stays unbilled when the event comes; a second waiver changes
// nothing; the attempt that answered is billed as usual. On Postgres when DATABASE_URL is set, else PGlite.
import { randomUUID } from "node:crypto";
import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { migrate } from "../../db/migrate.ts";
import { type Db, openDb } from "../../db/open.ts";
import { ensureOrg } from "../../gateway/api-keys.ts";
import { quotaStatus, reserveQuota, setMonthlyTokenQuota } from "../../meter/token-quota.ts";
import { usageRollup } from "../../meter/usage-rollup.ts";
import { writeUsageBatch } from "../../meter/usage-writer.ts";
import { waiveUsage } from "../../meter/waived-usage.ts";
import { usageEvents } from "../../schema/db.ts";
import { registerBase, usageEvent } from "../support/meter-fixtures.ts";

const databaseUrl = inject("postgresUrl") || "pglite:memory";
const base = `test/base-${randomUUID().slice(0, 8)}`;
const now = Date.UTC(2025, 2, 1, 10);

let db: Db;

beforeAll(async () => {
  db = await openDb(databaseUrl);
  await migrate(db);
  // 1 µ$ per input token, 2 per output token.
  await registerBase(db, base, 1_000_000, 2_000_000);
});
afterAll(async () => {
  await db?.close();
});

async function newOrg(): Promise<string> {
  const org = `org-${randomUUID().slice(0, 8)}`;
  await ensureOrg(db, org);
  await setMonthlyTokenQuota(db, org, 10_000);
  return org;
}

const attempt = (org: string, requestId: string) => ({
  requestId,
  orgId: org,
  apiKeyId: "key-1",
  base,
  batch: true,
  at: new Date(now + 5_000),
});

async function rowOf(requestId: string) {
  const [row] = await db.select().from(usageEvents).where(eq(usageEvents.requestId, requestId));
  return row;
}

async function reported(org: string) {
  const rows = await usageRollup(db, { by: "day", org });
  return rows.map(({ requests, inputTokens, outputTokens, costMicros }) => ({
    requests,
    inputTokens,
    outputTokens,
    costMicros,
  }));
}

describe("waiving an attempt's usage", () => {
  it("takes an attempt already billed back out of its cost, the report and the quota, and bills the attempt that answered", async () => {
    const org = await newOrg();
    const cut = usageEvent({ org, base, batch: true, input_tokens: 30, output_tokens: 700 });
    const answered = usageEvent({ org, base, batch: true, input_tokens: 30, output_tokens: 900 });
    await writeUsageBatch(db, [cut]);
    expect(await quotaStatus(db, org, now)).toMatchObject({ used: 730 });

    await db.transaction((tx) => waiveUsage(tx, attempt(org, cut.request_id)));
    expect(await rowOf(cut.request_id)).toMatchObject({
      waived: true,
      costMicros: 0,
      inputTokens: 30,
      outputTokens: 700,
      finishReason: "stop",
    });
    expect(await quotaStatus(db, org, now)).toMatchObject({ used: 0 });
    expect(await reported(org)).toEqual([]);

    await writeUsageBatch(db, [answered]);
    expect(await quotaStatus(db, org, now)).toMatchObject({ used: 930 });
    // 30 × 1 + 900 × 2 µ$ (the base's batch price is its full price).
    expect(await reported(org)).toEqual([
      { requests: 1, inputTokens: 30, outputTokens: 900, costMicros: 1_830 },
    ]);
  });

  it("keeps an attempt waived before its usage event arrives unbilled when the event comes, and releases its reservation", async () => {
    const org = await newOrg();
    const late = usageEvent({ org, base, batch: true, input_tokens: 30, output_tokens: 2_000 });
    expect(
      await reserveQuota(db, { requestId: late.request_id, orgId: org, tokens: 2_030, now, holdMs: 60_000 }),
    ).toBe(true);
    expect(await quotaStatus(db, org, now)).toMatchObject({ used: 0, reserved: 2_030 });

    await db.transaction((tx) => waiveUsage(tx, attempt(org, late.request_id)));
    expect(await quotaStatus(db, org, now)).toMatchObject({ used: 0, reserved: 0 });
    expect(await rowOf(late.request_id)).toMatchObject({
      waived: true,
      costMicros: 0,
      inputTokens: 0,
      outputTokens: 0,
      finishReason: "waived",
    });

    const outcome = await writeUsageBatch(db, [late]);
    expect(outcome).toMatchObject({ inserted: 0, duplicates: 1 });
    expect(await quotaStatus(db, org, now)).toMatchObject({ used: 0, reserved: 0 });
    expect(await reported(org)).toEqual([]);
  });

  it("takes nothing back a second time when the same attempt is waived again", async () => {
    const org = await newOrg();
    const cut = usageEvent({ org, base, batch: true, input_tokens: 10, output_tokens: 90 });
    const other = usageEvent({ org, base, batch: true, input_tokens: 10, output_tokens: 40 });
    await writeUsageBatch(db, [cut, other]);
    await db.transaction((tx) => waiveUsage(tx, attempt(org, cut.request_id)));
    await db.transaction((tx) => waiveUsage(tx, attempt(org, cut.request_id)));
    expect(await quotaStatus(db, org, now)).toMatchObject({ used: 50 });
    expect(await reported(org)).toEqual([{ requests: 1, inputTokens: 10, outputTokens: 40, costMicros: 90 }]);
  });
});
