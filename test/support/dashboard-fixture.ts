// A gateway with something to show on its dashboard, for the dashboard's tests: the gateway harness
// (PGlite, in-process bus) with the meter running, usage on three of the last 30 UTC days across
// adapters and the base model, acme's adapters (one with an alias), and a fake worker whose heartbeat holds
// acme's adapters and another org's in its tiers.
import { eq } from "drizzle-orm";
import { vi } from "vitest";
import { type Meter, startMeter } from "../../meter/meter.ts";
import { baseModels } from "../../schema/db.ts";
import type { UsageEvent } from "../../schema/wire.ts";
import { FakeWorker } from "./fake-worker.ts";
import { BASE, createGatewayHarness, type GatewayHarness } from "./gateway-harness.ts";
import { orgTotals, usageEvent } from "./meter-fixtures.ts";

export interface DashboardFixture {
  h: GatewayHarness;
  worker: FakeWorker;
  events: UsageEvent[];
  close(): Promise<void>;
}

const DAY_MS = 86_400_000;

export async function createDashboardFixture(): Promise<DashboardFixture> {
  const h = await createGatewayHarness();
  // $0.15 / $0.60 per million input / output tokens, so costs are not all zero.
  await h.db
    .update(baseModels)
    .set({ inputPriceMicrosPerMillion: 150_000, outputPriceMicrosPerMillion: 600_000 })
    .where(eq(baseModels.name, BASE));
  const meter: Meter = await startMeter({ bus: h.bus, db: h.db, flushMs: 5 });
  const today = Math.floor(Date.now() / DAY_MS) * DAY_MS;
  const at = (daysAgo: number) => ({
    started_ms: today - daysAgo * DAY_MS + 3_600_000,
    finished_ms: today - daysAgo * DAY_MS + 3_601_000,
  });
  const events: UsageEvent[] = [
    usageEvent({
      org: "acme",
      base: BASE,
      adapter: "support-v1",
      input_tokens: 1200,
      cached_input_tokens: 512,
      output_tokens: 300,
      ...at(0),
    }),
    usageEvent({
      org: "acme",
      base: BASE,
      adapter: "support-v1",
      input_tokens: 800,
      output_tokens: 500,
      ...at(1),
    }),
    usageEvent({
      org: "acme",
      base: BASE,
      adapter: "legal-v2",
      input_tokens: 400,
      cached_input_tokens: 48,
      output_tokens: 100,
      // A Batch API line, and below a priority request (both at 100 % of the prices here).
      batch: true,
      ...at(1),
    }),
    usageEvent({
      org: "acme",
      base: BASE,
      adapter: null,
      input_tokens: 90,
      output_tokens: 10,
      priority: true,
      ...at(5),
    }),
    // Another org's usage must never show on acme's dashboard.
    usageEvent({
      org: "other",
      base: BASE,
      adapter: "theirs",
      input_tokens: 99_999,
      output_tokens: 9,
      ...at(0),
    }),
  ];
  for (const event of events) await h.workerBus.publishUsage(event);
  await vi.waitFor(async () => expect4(await orgTotals(h.db, "acme")), { timeout: 10_000 });
  await h.addAdapter({ name: "support-v1" });
  await h.addAdapter({ name: "legal-v2", alias: "legal", trafficWeight: 100 });
  await h.addAdapter({ name: "legal-v3", alias: "legal", trafficWeight: 0 });
  const worker = await FakeWorker.start(h.workerBus, {
    base: BASE,
    workerId: "gpu-0",
    heartbeat: {
      adapters: { slot: ["acme/support-v1", "other/secret-adapter"], ram: ["acme/legal-v2"], disk: [] },
      queue_depth: 3,
      running: 5,
      free_slots: 6,
    },
  });
  return {
    h,
    worker,
    events,
    async close() {
      await worker.stop();
      await meter.stop();
      await h.close();
    },
  };
}

function expect4(totals: { rows: number }): void {
  if (totals.rows !== 4) throw new Error(`acme has ${totals.rows} usage rows, waiting for 4`);
}
