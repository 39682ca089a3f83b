// The meter against real NATS (a namespace per test) and Postgres (PGlite when DATABASE_URL is unset):
// exact prices, one row per request id however often its event arrives, events it cannot price held in
// JetStream rather than billed wrong, a stop that bills what it already took, and its series and readiness.
import { randomUUID } from "node:crypto";
import { eq } from "drizzle-orm";
import { afterAll, afterEach, beforeAll, describe, expect, inject, it, vi } from "vitest";
import type { Bus } from "../../bus/bus.ts";
import { InProcessBroker } from "../../bus/in-process.ts";
import { connectJetStreamBus, type JetStreamBusOptions } from "../../bus/jetstream.ts";
import { listeningPort, serveMetrics } from "../../core/metrics-server.ts";
import { migrate } from "../../db/migrate.ts";
import { type Db, openDb } from "../../db/open.ts";
import { type Meter, startMeter } from "../../meter/meter.ts";
import { MeterMetrics } from "../../meter/metrics.ts";
import { baseModels, usageEvents } from "../../schema/db.ts";
import {
  meterAckPending,
  orgRows,
  orgTotals,
  registerBase,
  uniqueNamespace,
  usageBacklog,
  usageEvent,
} from "../support/meter-fixtures.ts";
import { openMigratedPglite } from "../support/migrated-pglite.ts";

const natsUrl = inject("natsUrl");
const databaseUrl = inject("postgresUrl") || "pglite:memory";
const waitLong = { timeout: 20_000, interval: 50 };

describe(`the meter (${databaseUrl.startsWith("pglite") ? "PGlite" : "Postgres"})`, () => {
  let db: Db;
  const cleanups: Array<() => Promise<void>> = [];
  /** A base with $0.15 / $0.60 per million input / output tokens. */
  let base: string;

  beforeAll(async () => {
    db = await openDb(databaseUrl);
    await migrate(db);
    base = `test/priced-${randomUUID()}`;
    await registerBase(db, base, 150_000, 600_000);
  });

  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  afterAll(async () => {
    await db.close();
  });

  async function jetStream(options: Partial<JetStreamBusOptions> = {}) {
    const namespace = uniqueNamespace();
    const connectBus = async () => {
      const bus = await connectJetStreamBus({ servers: natsUrl, namespace, ...options });
      cleanups.push(() => bus.close());
      return bus;
    };
    return { namespace, publisher: await connectBus(), meterBus: await connectBus() };
  }

  async function meterOn(bus: Bus, options: { batchSize?: number; flushMs?: number } = {}): Promise<Meter> {
    const meter = await startMeter({ bus, db, ...options });
    let stopped = false;
    cleanups.push(async () => {
      if (!stopped) await meter.stop();
    });
    return {
      problem: () => meter.problem(),
      stop: async () => {
        stopped = true;
        await meter.stop();
      },
    };
  }

  it("bills each request once at its base's price, rounded up to the whole micro-dollar", async () => {
    const { namespace, publisher, meterBus } = await jetStream();
    await meterOn(meterBus);
    const org = `org-${randomUUID()}`;
    const cases = [
      // 1000 × 0.15 + 333 × 0.60 = 349.8 micro-dollars; input the prompt cache covered costs the same
      { input: 1000, cached: 640, output: 333, cost: 350 },
      // 0.15 micro-dollars: a request that used tokens is never free
      { input: 1, output: 0, cost: 1 },
      { input: 0, output: 0, cost: 0 },
      // 300 + 300, exact: nothing to round
      { input: 2000, output: 500, cost: 600 },
      // near the columns' int32 limit: 1.95e9 × 0.15 + 1.9e9 × 0.60 = 1_432_500_000 exactly
      { input: 1_950_000_000, output: 1_900_000_000, cost: 1_432_500_000 },
    ];
    for (const [i, c] of cases.entries()) {
      await publisher.publishUsage(
        usageEvent({
          org,
          base,
          request_id: `${org}-${i}`,
          input_tokens: c.input,
          // An event without the field (an older worker's) is stored with 0 cached.
          ...(c.cached === undefined ? {} : { cached_input_tokens: c.cached }),
          output_tokens: c.output,
        }),
      );
    }
    await vi.waitFor(async () => expect(await orgRows(db, org)).toHaveLength(cases.length), waitLong);
    const rows = await orgRows(db, org);
    expect(rows.map((r) => [r.inputTokens, r.cachedInputTokens, r.outputTokens, r.costMicros])).toEqual(
      cases.map((c) => [c.input, c.cached ?? 0, c.output, c.cost]),
    );
    expect(rows[0]).toMatchObject({
      apiKeyId: "key-1",
      base,
      adapter: "support-v1",
      finishReason: "stop",
      startedAt: new Date(Date.UTC(2025, 2, 1, 10)),
      finishedAt: new Date(Date.UTC(2025, 2, 1, 10, 0, 2)),
    });
    await vi.waitFor(async () => expect(await usageBacklog(natsUrl, namespace)).toBe(0), waitLong);
  });

  it("bills input the prefix cache covered at the base's cached input price", async () => {
    const { namespace, publisher, meterBus } = await jetStream();
    await meterOn(meterBus);
    const discounted = `test/cached-${randomUUID()}`;
    // $0.15 input, $0.015 cached input, $0.60 output per million tokens.
    await registerBase(db, discounted, 150_000, 600_000, 15_000);
    const org = `org-${randomUUID()}`;
    const event = { org, base: discounted, input_tokens: 1000, output_tokens: 333 };
    await publisher.publishUsage(
      usageEvent({ ...event, request_id: `${org}-cached`, cached_input_tokens: 640 }),
    );
    await publisher.publishUsage(usageEvent({ ...event, request_id: `${org}-uncached` }));
    await vi.waitFor(async () => expect(await orgRows(db, org)).toHaveLength(2), waitLong);
    // 360 × 0.15 + 640 × 0.015 + 333 × 0.60 = 263.4 → 264; without the cache 349.8 → 350.
    expect((await orgRows(db, org)).map((r) => [r.requestId, r.cachedInputTokens, r.costMicros])).toEqual([
      [`${org}-cached`, 640, 264],
      [`${org}-uncached`, 0, 350],
    ]);
    await vi.waitFor(async () => expect(await usageBacklog(natsUrl, namespace)).toBe(0), waitLong);
  });

  it("bills a Batch API line at the base's batch percent, and marks its row", async () => {
    const { namespace, publisher, meterBus } = await jetStream();
    await meterOn(meterBus);
    const halved = `test/batch-${randomUUID()}`;
    await registerBase(db, halved, 150_000, 600_000);
    await db.update(baseModels).set({ batchPricePercent: 50 }).where(eq(baseModels.name, halved));
    const org = `org-${randomUUID()}`;
    const event = { org, base: halved, input_tokens: 1000, output_tokens: 333 };
    await publisher.publishUsage(usageEvent({ ...event, request_id: `${org}-batch`, batch: true }));
    await publisher.publishUsage(usageEvent({ ...event, request_id: `${org}-live` }));
    await vi.waitFor(async () => expect(await orgRows(db, org)).toHaveLength(2), waitLong);
    // 349.8 → 350 at full price; half of it, rounded once, 174.9 → 175.
    expect((await orgRows(db, org)).map((r) => [r.requestId, r.batch, r.costMicros])).toEqual([
      [`${org}-batch`, true, 175],
      [`${org}-live`, false, 350],
    ]);
    await vi.waitFor(async () => expect(await usageBacklog(natsUrl, namespace)).toBe(0), waitLong);
  });

  it("bills a priority-tier request at the base's priority percent, and marks its row", async () => {
    const { namespace, publisher, meterBus } = await jetStream();
    await meterOn(meterBus);
    const premium = `test/priority-${randomUUID()}`;
    await registerBase(db, premium, 150_000, 600_000);
    await db.update(baseModels).set({ priorityPricePercent: 175 }).where(eq(baseModels.name, premium));
    const org = `org-${randomUUID()}`;
    const event = { org, base: premium, input_tokens: 1000, output_tokens: 333 };
    await publisher.publishUsage(usageEvent({ ...event, request_id: `${org}-live` }));
    await publisher.publishUsage(usageEvent({ ...event, request_id: `${org}-priority`, priority: true }));
    await vi.waitFor(async () => expect(await orgRows(db, org)).toHaveLength(2), waitLong);
    // 349.8 at full price → 350; at 175 %, rounded once, 612.15 → 613.
    expect((await orgRows(db, org)).map((r) => [r.requestId, r.priority, r.costMicros])).toEqual([
      [`${org}-live`, false, 350],
      [`${org}-priority`, true, 613],
    ]);
    await vi.waitFor(async () => expect(await usageBacklog(natsUrl, namespace)).toBe(0), waitLong);
  });

  it("writes a burst larger than one batch whole, each request rounded on its own", async () => {
    const { namespace, publisher, meterBus } = await jetStream();
    await meterOn(meterBus, { batchSize: 8, flushMs: 20 });
    const org = `org-${randomUUID()}`;
    // 7 × 0.15 + 3 × 0.60 = 2.85 → 3 micro-dollars each; rounding the sum instead would give 285.
    await Promise.all(
      Array.from({ length: 100 }, () =>
        publisher.publishUsage(usageEvent({ org, base, input_tokens: 7, output_tokens: 3 })),
      ),
    );
    await vi.waitFor(async () => expect((await orgTotals(db, org)).rows).toBe(100), waitLong);
    expect(await orgTotals(db, org)).toEqual({
      rows: 100,
      distinctRequests: 100,
      inputTokens: 700,
      outputTokens: 300,
      costMicros: 300,
    });
    await vi.waitFor(async () => expect(await usageBacklog(natsUrl, namespace)).toBe(0), waitLong);
  });

  it("keeps one row for a request id replayed after JetStream's dedupe window", async () => {
    const { namespace, publisher, meterBus } = await jetStream({ usageDedupeWindowMs: 1_000 });
    await meterOn(meterBus);
    const org = `org-${randomUUID()}`;
    const first = usageEvent({ org, base, input_tokens: 1000, output_tokens: 333 });
    expect((await publisher.publishUsage(first)).duplicate).toBe(false);
    await vi.waitFor(async () => expect(await orgRows(db, org)).toHaveLength(1), waitLong);

    await new Promise((resolve) => setTimeout(resolve, 1_500));
    // JetStream has forgotten the id, so this copy (with different counts) is stored and delivered.
    const replay = { ...first, input_tokens: 5, output_tokens: 5 };
    expect((await publisher.publishUsage(replay)).duplicate).toBe(false);
    await vi.waitFor(async () => expect(await usageBacklog(natsUrl, namespace)).toBe(0), waitLong);

    const rows = await orgRows(db, org);
    expect(rows.map((r) => [r.requestId, r.inputTokens, r.outputTokens, r.costMicros])).toEqual([
      [first.request_id, 1000, 333, 350],
    ]);
  });

  it("acks without a second row an event whose row was committed before its ack was lost", async () => {
    const { namespace, publisher, meterBus } = await jetStream();
    const org = `org-${randomUUID()}`;
    const event = usageEvent({ org, base, input_tokens: 10, output_tokens: 10 });
    await db.insert(usageEvents).values({
      requestId: event.request_id,
      orgId: org,
      apiKeyId: event.api_key_id,
      base,
      adapter: event.adapter,
      inputTokens: 10,
      outputTokens: 10,
      costMicros: 8,
      finishReason: "stop",
      startedAt: new Date(event.started_ms),
      finishedAt: new Date(event.finished_ms),
    });
    await publisher.publishUsage({ ...event, output_tokens: 999 });
    await meterOn(meterBus);
    await vi.waitFor(async () => expect(await usageBacklog(natsUrl, namespace)).toBe(0), waitLong);
    const rows = await orgRows(db, org);
    expect(rows.map((r) => [r.outputTokens, r.costMicros])).toEqual([[10, 8]]);
  });

  it("holds an event for an unknown base in JetStream, unbilled, until the base has prices", async () => {
    const { namespace, publisher, meterBus } = await jetStream({ usageRetryDelayMs: 100 });
    await meterOn(meterBus, { flushMs: 10 });
    const org = `org-${randomUUID()}`;
    const unknownBase = `test/unregistered-${randomUUID()}`;
    const orphan = usageEvent({ org, base: unknownBase, input_tokens: 1_000_000, output_tokens: 0 });
    const known = usageEvent({ org, base });
    await publisher.publishUsage(orphan);
    await publisher.publishUsage(known);

    // The known event is billed and acked; the orphan keeps coming back and stays in the stream.
    await vi.waitFor(async () => expect(await usageBacklog(natsUrl, namespace)).toBe(1), waitLong);
    expect((await orgRows(db, org)).map((r) => r.requestId)).toEqual([known.request_id]);

    await registerBase(db, unknownBase, 2_000_000, 0);
    await vi.waitFor(async () => expect(await usageBacklog(natsUrl, namespace)).toBe(0), waitLong);
    const billed = await db.select().from(usageEvents).where(eq(usageEvents.requestId, orphan.request_id));
    expect(billed.map((r) => r.costMicros)).toEqual([2_000_000]);
  });

  it("on stop, writes and acks the events it has taken but not yet written", async () => {
    const { namespace, publisher, meterBus } = await jetStream();
    // A flush delay no test waits for: only stop() can write these.
    const meter = await meterOn(meterBus, { batchSize: 4, flushMs: 600_000 });
    const org = `org-${randomUUID()}`;
    await publisher.publishUsage(usageEvent({ org, base }));
    await publisher.publishUsage(usageEvent({ org, base }));
    await vi.waitFor(async () => expect(await meterAckPending(natsUrl, namespace)).toBe(2), waitLong);
    expect(await orgRows(db, org)).toHaveLength(0);

    await meter.stop();
    expect(await orgRows(db, org)).toHaveLength(2);
    expect(await usageBacklog(natsUrl, namespace)).toBe(0);
  });

  it("counts what it bills and holds, and serves that, its lag and a refused batch at /metrics and /readyz", async () => {
    const { publisher, meterBus } = await jetStream({ usageRetryDelayMs: 100 });
    // A database of its own, to close under the meter.
    const own = await openMigratedPglite();
    await registerBase(own, base, 150_000, 600_000);
    const metrics = new MeterMetrics();
    const meter = await startMeter({ bus: meterBus, db: own, flushMs: 10, metrics });
    const server = await serveMetrics(metrics.registry, 0, "127.0.0.1", () => meter.problem());
    cleanups.push(async () => {
      await new Promise((resolve) => server.close(resolve));
      await meter.stop();
      // Closed midway unless the test failed before.
      await own.close().catch(() => {});
    });
    const url = `http://127.0.0.1:${listeningPort(server)}`;
    const scrape = async () => (await fetch(`${url}/metrics`)).text();
    const readiness = async () => {
      const res = await fetch(`${url}/readyz`);
      return `${res.status} ${await res.text()}`;
    };

    const org = `org-${randomUUID()}`;
    await publisher.publishUsage(usageEvent({ org, base }));
    await publisher.publishUsage(usageEvent({ org, base }));
    await publisher.publishUsage(usageEvent({ org, base: `test/unregistered-${randomUUID()}` }));
    await vi.waitFor(async () => {
      const text = await scrape();
      expect(text).toContain('luminet_meter_events_total{outcome="billed"} 2');
      expect(text).toMatch(/luminet_meter_events_total\{outcome="held"\} [1-9]/);
      // The held event waits in JetStream: the one event not billed.
      expect(text).toContain("luminet_usage_events_unbilled 1");
    }, waitLong);
    expect((await orgTotals(own, org)).rows).toBe(2);
    expect(await scrape()).toContain("luminet_meter_write_failures_total 0");
    expect(await readiness()).toBe("200 ready\n");

    // The database goes away: the next batch is refused, counted, and readiness says why.
    await own.close();
    await publisher.publishUsage(usageEvent({ org, base }));
    await vi.waitFor(
      async () => expect(await scrape()).toMatch(/luminet_meter_write_failures_total [1-9]/),
      waitLong,
    );
    expect(await readiness()).toMatch(
      /^503 not ready: could not write \d+ usage event\(s\), they will be delivered again: /,
    );
    expect(await scrape()).toMatch(/luminet_usage_events_unbilled [2-9]/);
  });

  it("meters from the in-process bus as well", async () => {
    const broker = new InProcessBroker();
    const bus = broker.connect();
    cleanups.push(() => bus.close());
    await meterOn(bus, { flushMs: 5 });
    const org = `org-${randomUUID()}`;
    for (let i = 0; i < 3; i++) await bus.publishUsage(usageEvent({ org, base }));
    await vi.waitFor(async () => expect((await orgTotals(db, org)).rows).toBe(3), waitLong);
    expect((await orgTotals(db, org)).costMicros).toBe(3 * 27);
  });
});
