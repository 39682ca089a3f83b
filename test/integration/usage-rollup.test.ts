// The usage rollup query every reader shares (CLI, usage API, dashboard): sums by UTC day, adapter and
// key, scoped by org, base and a [since, until) window. On Postgres when DATABASE_URL is set, else PGlite.
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { migrate } from "../../db/migrate.ts";
import { type Db, openDb } from "../../db/open.ts";
import { usageRollup } from "../../meter/usage-rollup.ts";
import { type NewUsageEvent, usageEvents } from "../../schema/db.ts";

const databaseUrl = inject("postgresUrl") || "pglite:memory";
const org = `acme-${randomUUID().slice(0, 8)}`;
const other = `globex-${randomUUID().slice(0, 8)}`;

function usage(finishedAt: string, extra: Partial<NewUsageEvent> = {}): NewUsageEvent {
  return {
    requestId: `req-${randomUUID()}`,
    orgId: org,
    apiKeyId: "key-a",
    base: "test/base-1",
    adapter: "support-v1",
    inputTokens: 100,
    outputTokens: 20,
    costMicros: 27,
    finishReason: "stop",
    startedAt: new Date(finishedAt),
    finishedAt: new Date(finishedAt),
    ...extra,
  };
}

describe("usageRollup", () => {
  let db: Db;

  beforeAll(async () => {
    db = await openDb(databaseUrl);
    await migrate(db);
    await db.insert(usageEvents).values([
      // The last instant of 1 March UTC and the first of 2 March fall on different days.
      usage("2025-03-01T00:00:00Z", { cachedInputTokens: 64 }),
      usage("2025-03-01T23:59:59.999Z", {
        adapter: null,
        inputTokens: 50,
        cachedInputTokens: 16,
        outputTokens: 5,
        costMicros: 11,
      }),
      usage("2025-03-02T00:00:00Z", { adapter: "legal-v2", apiKeyId: "key-b", costMicros: 350 }),
      usage("2025-03-03T12:00:00Z", { base: "test/base-2", costMicros: 1_234_567 }),
      usage("2025-03-01T12:00:00Z", { orgId: other, inputTokens: 9_999, costMicros: 5 }),
    ]);
  });

  afterAll(async () => {
    await db.close();
  });

  it("sums an org's usage by UTC day, oldest first, leaving other orgs out", async () => {
    expect(await usageRollup(db, { by: "day", org })).toEqual([
      {
        org,
        group: "2025-03-01",
        requests: 2,
        inputTokens: 150,
        cachedInputTokens: 80,
        outputTokens: 25,
        costMicros: 38,
      },
      {
        org,
        group: "2025-03-02",
        requests: 1,
        inputTokens: 100,
        cachedInputTokens: 0,
        outputTokens: 20,
        costMicros: 350,
      },
      {
        org,
        group: "2025-03-03",
        requests: 1,
        inputTokens: 100,
        cachedInputTokens: 0,
        outputTokens: 20,
        costMicros: 1_234_567,
      },
    ]);
  });

  it("sums by adapter with the base model alone as null, and by key", async () => {
    const byAdapter = await usageRollup(db, { by: "adapter", org });
    expect(byAdapter.map((r) => [r.group, r.requests, r.costMicros])).toEqual([
      ["legal-v2", 1, 350],
      ["support-v1", 2, 27 + 1_234_567],
      [null, 1, 11],
    ]);
    const byKey = await usageRollup(db, { by: "key", org });
    expect(byKey.map((r) => [r.group, r.requests])).toEqual([
      ["key-a", 3],
      ["key-b", 1],
    ]);
  });

  it("keeps rows finished in [since, until) and of one base", async () => {
    const window = await usageRollup(db, {
      by: "day",
      org,
      since: new Date("2025-03-01T23:59:59.999Z"),
      until: new Date("2025-03-03T12:00:00Z"),
    });
    expect(window.map((r) => [r.group, r.requests])).toEqual([
      ["2025-03-01", 1],
      ["2025-03-02", 1],
    ]);
    const base2 = await usageRollup(db, { by: "day", org, base: "test/base-2" });
    expect(base2.map((r) => r.group)).toEqual(["2025-03-03"]);
  });

  it("gives every org's rows when no org is named", async () => {
    const rows = await usageRollup(db, {
      by: "day",
      since: new Date("2025-03-01"),
      until: new Date("2025-03-02"),
    });
    const orgsSeen = rows.map((r) => r.org).filter((o) => o === org || o === other);
    expect(orgsSeen).toEqual([org, other].sort());
  });
});
