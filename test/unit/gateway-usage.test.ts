// GET /v1/usage on the gateway app (PGlite, in-process bus): usage events go through the meter, and the
// caller's org sees exactly the tokens and cost those events carried — never another org's — grouped by
// day, adapter or key, within start/end; bad parameters get OpenAI-shaped 400s.
import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { type Meter, startMeter } from "../../meter/meter.ts";
import type { UsageReport } from "../../meter/usage-report.ts";
import type { ErrorBody } from "../../schema/api.ts";
import { baseModels } from "../../schema/db.ts";
import type { UsageEvent } from "../../schema/wire.ts";
import { BASE, createGatewayHarness, type GatewayHarness } from "../support/gateway-harness.ts";
import { orgTotals, usageEvent } from "../support/meter-fixtures.ts";

let h: GatewayHarness;
let meter: Meter;

const day = (d: number, hour = 12) => Date.UTC(2025, 2, d, hour);
const events: UsageEvent[] = [
  usageEvent({
    org: "acme",
    base: BASE,
    adapter: "support-v1",
    input_tokens: 1000,
    cached_input_tokens: 320,
    output_tokens: 333,
  }),
  usageEvent({
    org: "acme",
    base: BASE,
    adapter: "support-v1",
    input_tokens: 7,
    output_tokens: 3,
    batch: true,
  }),
  usageEvent({ org: "acme", base: BASE, adapter: null, input_tokens: 50, output_tokens: 0 }),
  usageEvent({
    org: "acme",
    base: BASE,
    api_key_id: "key-2",
    adapter: "legal-v2",
    input_tokens: 1,
    output_tokens: 1,
    priority: true,
  }),
  usageEvent({ org: "other", base: BASE, adapter: "theirs", input_tokens: 9_999, output_tokens: 9_999 }),
].map((event, i) => ({ ...event, started_ms: day(1 + (i % 3)), finished_ms: day(1 + (i % 3)) + 500 }));

beforeAll(async () => {
  h = await createGatewayHarness();
  await h.db
    .update(baseModels)
    .set({ inputPriceMicrosPerMillion: 150_000, outputPriceMicrosPerMillion: 600_000 })
    .where(eq(baseModels.name, BASE));
  meter = await startMeter({ bus: h.bus, db: h.db, flushMs: 5 });
  for (const event of events) await h.workerBus.publishUsage(event);
  await vi.waitFor(async () => expect((await orgTotals(h.db, "acme")).rows).toBe(4), { timeout: 10_000 });
  await vi.waitFor(async () => expect((await orgTotals(h.db, "other")).rows).toBe(1), { timeout: 10_000 });
});

afterAll(async () => {
  await meter.stop();
  await h.close();
});

async function usage(query: string, key = h.keys.acme) {
  const res = await h.app.request(`/v1/usage${query}`, { headers: { authorization: `Bearer ${key}` } });
  return { status: res.status, body: await res.json() };
}

describe("GET /v1/usage", () => {
  it("totals exactly the tokens the caller's org's usage events carried, at the base's price", async () => {
    const { status, body } = await usage("");
    expect(status).toBe(200);
    const report = body as UsageReport;
    const acme = events.filter((e) => e.org === "acme");
    expect(report.org).toBe("acme");
    expect(report.total).toEqual({
      requests: acme.length,
      input_tokens: acme.reduce((sum, e) => sum + e.input_tokens, 0),
      cached_input_tokens: 320,
      output_tokens: acme.reduce((sum, e) => sum + e.output_tokens, 0),
      total_tokens: acme.reduce((sum, e) => sum + e.input_tokens + e.output_tokens, 0),
      // 349.8 → 350, 2.85 → 3, 7.5 → 8, 0.75 → 1: each request rounded up on its own
      cost_micros: 350 + 3 + 8 + 1,
      cost_usd: "0.000362",
    });
    expect(report.data.map((row) => [row.day, row.requests])).toEqual([
      ["2025-03-01", 2],
      ["2025-03-02", 1],
      ["2025-03-03", 1],
    ]);
  });

  it("groups by adapter, by key and by tier, and another org sees only its own", async () => {
    const byAdapter = (await usage("?group_by=adapter")).body as UsageReport;
    expect(byAdapter.data.map((row) => [row.adapter, row.requests, row.cost_micros])).toEqual([
      ["legal-v2", 1, 1],
      ["support-v1", 2, 353],
      [null, 1, 8],
    ]);
    const byKey = (await usage("?group_by=key")).body as UsageReport;
    expect(byKey.data.map((row) => [row.api_key_id, row.requests])).toEqual([
      ["key-1", 3],
      ["key-2", 1],
    ]);
    // By the tier billed (the base's batch and priority percents are 100 here: same costs).
    const byTier = (await usage("?group_by=tier")).body as UsageReport;
    expect(byTier.data.map((row) => [row.service_tier, row.requests, row.cost_micros])).toEqual([
      ["batch", 1, 3],
      ["default", 2, 358],
      ["priority", 1, 1],
    ]);
    const theirs = (await usage("?group_by=adapter", h.keys.other)).body as UsageReport;
    expect(theirs.data.map((row) => [row.org, row.adapter, row.input_tokens])).toEqual([
      ["other", "theirs", 9_999],
    ]);
  });

  it("keeps rows finished in [start, end), given as days, unix seconds or instants", async () => {
    const days = (await usage("?start=2025-03-02&end=2025-03-03")).body as UsageReport;
    expect(days.data.map((row) => row.day)).toEqual(["2025-03-02"]);
    expect(days.start).toBe("2025-03-02T00:00:00.000Z");
    const seconds = (await usage(`?start=${day(2, 0) / 1000}`)).body as UsageReport;
    expect(seconds.data.map((row) => row.day)).toEqual(["2025-03-02", "2025-03-03"]);
    const instants = (await usage("?end=2025-03-01T12:00:00.500Z")).body as UsageReport;
    expect(instants.total.requests).toBe(0);
    const base = (await usage("?base=another-base")).body as UsageReport;
    expect(base.data).toEqual([]);
  });

  it("answers bad parameters with a 400 naming the parameter, and no key with 401", async () => {
    const bad = [
      ["?group_by=week", "group_by"],
      ["?start=yesterday", "start"],
      ["?start=2025-02-30", "start"],
      ["?start=2025-03-02&end=2025-03-01", "end"],
    ] as const;
    for (const [query, param] of bad) {
      const { status, body } = await usage(query);
      expect(status).toBe(400);
      expect((body as ErrorBody).error).toMatchObject({ type: "invalid_request_error", param });
    }
    const anonymous = await h.app.request("/v1/usage");
    expect(anonymous.status).toBe(401);
  });
});
