// Drill: nats-server stops while requests stream, the worker finishes them while NATS is still down (their
// usage events cannot be stored), and then the worker is killed (kill -9) — or stopped (SIGTERM) — before
// NATS is back.
// Expected (docs/OPERATIONS.md, "Failure drills"): the streams end at once with an in-band 503
// `bus_unavailable`; the worker writes each finished request's usage event to its usage spool on disk
// before trying to store it; the worker started again on the same spool sends them once NATS is back, so
// each request is billed once, what the worker generated. The requests themselves, redelivered to it, are
// refused a second run (their gateway inbox is gone). A worker stopped with SIGTERM meanwhile drains and
// exits without waiting for NATS: what it could not send stays on the spool.
import { readdirSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { expectBilledAsTold } from "../../support/drill-billing.ts";
import { type ChatOutcome, startStreams } from "../../support/drill-client.ts";
import { DRILL_BASE, DRILL_ORG, type DrillStack, startDrillStack } from "../../support/drill-stack.ts";
import { postgresBinaries } from "../../support/private-postgres.ts";

const bin = postgresBinaries();
/** Long enough to be running when NATS stops, short enough to finish soon after. */
const TOKENS = 200;

const spooledEvents = (dir: string) => readdirSync(dir).filter((name) => name.endsWith(".json"));

describe("drill: a worker killed while NATS is down", () => {
  if (!bin) {
    it.skip("needs PostgreSQL's server binaries (apt-get install postgresql)", () => {});
    return;
  }
  let stack: DrillStack;
  /** Every request of the file's drills: the billing check covers the org's every row. */
  const sent: ChatOutcome[] = [];

  beforeAll(async () => {
    stack = await startDrillStack(bin, { adapters: 2 });
    await stack.startWorker("a");
    await stack.liveWorkers(1);
  }, 120_000);

  afterAll(async () => {
    await stack?.close();
  });

  it("bills what it generated, once, from its usage spool after a restart", async () => {
    const models = [DRILL_BASE, stack.adapterModel(0), stack.adapterModel(1)];
    const running = startStreams(
      stack.send,
      models.map((model) => ({ model, maxTokens: TOKENS })),
    );
    await running.streaming;
    await stack.nats.stop();
    const cut = await Promise.all(running.outcomes);
    for (const outcome of cut) {
      expect(outcome.contentChunks).toBeGreaterThan(0);
      expect(outcome.contentChunks).toBeLessThan(TOKENS);
      expect(outcome.error).toMatchObject({ code: "bus_unavailable" });
    }

    // The worker generates on (no cancel can reach it) and keeps each finished request's usage on disk.
    const worker = stack.workers.get("a")!;
    await vi.waitFor(() => expect(spooledEvents(worker.usageSpoolDir)).toHaveLength(models.length), {
      timeout: 30_000,
      interval: 100,
    });
    await worker.process.kill();
    await stack.nats.start();
    const restarted = await stack.startWorker("a");
    await vi.waitFor(() => expect(spooledEvents(restarted.usageSpoolDir)).toEqual([]), {
      timeout: 30_000,
      interval: 100,
    });

    await expectBilledAsTold(stack.db, DRILL_ORG, cut);
    const billed = await stack.db.query.usageEvents.findMany({
      where: (row, { eq }) => eq(row.orgId, DRILL_ORG),
    });
    expect(billed.map((row) => row.outputTokens)).toEqual(models.map(() => TOKENS));
    sent.push(...cut);
  });

  it("drains on SIGTERM without waiting for NATS, and bills from the spool after a restart", async () => {
    await stack.liveWorkers(1);
    const model = stack.adapterModel(0);
    const running = startStreams(stack.send, [{ model, maxTokens: TOKENS }]);
    await running.streaming;
    // Mid-generation: the drain lets it finish, then cannot store its usage.
    await stack.nats.stop();
    const cut = await Promise.all(running.outcomes);
    expect(cut[0]?.error).toMatchObject({ code: "bus_unavailable" });
    const worker = stack.workers.get("a")!;
    const stopping = Date.now();
    worker.process.signal("SIGTERM");
    // Not forever: its last calls to NATS (the ack, leaving the heartbeat bucket) time out.
    expect(await worker.process.exited).toBe(0);
    expect(Date.now() - stopping).toBeLessThan(30_000);
    expect(spooledEvents(worker.usageSpoolDir)).toHaveLength(1);

    await stack.nats.start();
    const restarted = await stack.startWorker("a");
    await vi.waitFor(() => expect(spooledEvents(restarted.usageSpoolDir)).toEqual([]), {
      timeout: 30_000,
      interval: 100,
    });
    await expectBilledAsTold(stack.db, DRILL_ORG, [...sent, ...cut]);
  });
});
