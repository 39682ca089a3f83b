// `luminet usage` prints the rollups: JSON with --since/--until as inclusive UTC days, a table with key
// labels and exact dollars, and a clear refusal of bad flags and of an org or base that is not there. On the run's Postgres when DATABASE_URL is
// set, else on a PGlite folder the CLI opens after the test has closed it.
import { spawnSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { migrate } from "../../db/migrate.ts";
import { openDb } from "../../db/open.ts";
import { apiKeys, type NewUsageEvent, orgs, usageEvents } from "../../schema/db.ts";

const dir = mkdtempSync(join(tmpdir(), "luminet-usage-"));
const databaseUrl = inject("postgresUrl") || `pglite:${join(dir, "db")}`;
const org = `acme-${randomUUID().slice(0, 8)}`;
const keyId = `key-${randomUUID()}`;

function usage(finishedAt: string, extra: Partial<NewUsageEvent>): NewUsageEvent {
  return {
    requestId: `req-${randomUUID()}`,
    orgId: org,
    apiKeyId: keyId,
    base: "test/base",
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

function luminet(...args: string[]) {
  return spawnSync(process.execPath, ["bin/luminet.mjs", "usage", ...args], {
    encoding: "utf8",
    env: { ...process.env, DATABASE_URL: databaseUrl },
  });
}

describe("luminet usage", () => {
  beforeAll(async () => {
    const db = await openDb(databaseUrl);
    await migrate(db);
    await db.insert(orgs).values({ id: org, name: "Acme" });
    await db
      .insert(apiKeys)
      .values({ id: keyId, orgId: org, keyHash: randomUUID(), prefix: "lm_ab12", name: "ci" });
    await db.insert(usageEvents).values([
      usage("2025-03-01T10:00:00Z", {}),
      usage("2025-03-02T00:00:00Z", {
        inputTokens: 1_000,
        cachedInputTokens: 640,
        outputTokens: 333,
        costMicros: 350,
      }),
      usage("2025-03-02T23:59:59.999Z", { apiKeyId: "key-gone", costMicros: 1_234_567 }),
      usage("2025-03-03T00:00:00Z", { costMicros: 5 }),
    ]);
    await db.close();
  });

  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("prints JSON rollups, with --since and --until as inclusive UTC days", () => {
    const result = luminet("--org", org, "--since", "2025-03-02", "--until", "2025-03-02", "--json");
    expect(result.stderr).toBe("");
    expect(result.status).toBe(0);
    const totals = {
      requests: 2,
      input_tokens: 1100,
      cached_input_tokens: 640,
      output_tokens: 353,
      total_tokens: 1453,
      cost_micros: 1_234_917,
      cost_usd: "1.234917",
    };
    // The same report GET /v1/usage returns; the inclusive last day becomes an exclusive end instant.
    expect(JSON.parse(result.stdout)).toEqual({
      object: "usage.report",
      group_by: "day",
      org,
      start: "2025-03-02T00:00:00.000Z",
      end: "2025-03-03T00:00:00.000Z",
      base: null,
      data: [{ org, day: "2025-03-02", ...totals }],
      total: totals,
    });
  });

  it("prints a table with key labels, exact dollars and a total", () => {
    const result = luminet("--org", org, "--by", "key");
    expect(result.status).toBe(0);
    const lines = result.stdout.trimEnd().split("\n");
    expect(lines[0]).toMatch(/^org\s+key\s+requests\s+input tokens\s+cached input\s+output tokens\s+cost$/);
    expect(result.stdout).toMatch(/lm_ab12… \(ci\)\s+3\s+1200\s+640\s+373\s+\$0\.000382/);
    expect(result.stdout).toMatch(/key-gone\s+1\s+100\s+0\s+20\s+\$1\.234567/);
    expect(lines.at(-1)).toMatch(/^total\s+4\s+1300\s+640\s+393\s+\$1\.234949$/);
  });

  it("refuses a bad dimension or day with a clear message and exit 1", () => {
    const by = luminet("--by", "week");
    expect(by.status).toBe(1);
    expect(by.stderr).toContain('--by must be one of day, adapter, key, tier, got "week"');
    const since = luminet("--since", "2025-02-30");
    expect(since.status).toBe(1);
    expect(since.stderr).toContain('--since must be a day as YYYY-MM-DD, got "2025-02-30"');
  });

  it("says an org or base that is not there, rather than print zeros for it", () => {
    const org = luminet("--org", "no-such-org");
    expect([org.status, org.stdout]).toEqual([1, ""]);
    expect(org.stderr).toContain('no org "no-such-org"');
    const base = luminet("--base", "no/such-base");
    expect([base.status, base.stdout]).toEqual([1, ""]);
    expect(base.stderr).toContain('no base model "no/such-base"');
  });
});
