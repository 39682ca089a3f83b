// Drill: stop Postgres (immediate shutdown, like a crash) while requests run, then start it again.
// Expected (docs/OPERATIONS.md, "Failure drills"): requests already running complete, since workers and
// NATS do not need the database; their usage events wait in JetStream while the meter cannot write, and
// are billed exactly once after Postgres is back. During the outage the gateway serves what it has cached
// (a key checked within 30 s, an adapter looked up within 5 s); anything else it must read gets 503
// `database_unavailable`. After the outage every key works again.
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { createApiKey } from "../../../gateway/api-keys.ts";
import { expectBilledAsTold } from "../../support/drill-billing.ts";
import { type ChatOutcome, startStreams } from "../../support/drill-client.ts";
import { DRILL_BASE, DRILL_ORG, type DrillStack, startDrillStack } from "../../support/drill-stack.ts";
import { postgresBinaries } from "../../support/private-postgres.ts";

const bin = postgresBinaries();

describe("drill: Postgres stopped while requests run", () => {
  if (!bin) {
    it.skip("needs PostgreSQL's server binaries (apt-get install postgresql)", () => {});
    return;
  }
  let stack: DrillStack;

  beforeAll(async () => {
    stack = await startDrillStack(bin, { adapters: 3 });
    await stack.startWorker("a");
    await stack.liveWorkers(1);
  }, 120_000);

  afterAll(async () => {
    await stack?.close();
  });

  it("finishes running requests, bills them once after the outage, and says what waits for it", async () => {
    const unseenKey = (await createApiKey(stack.db, { orgId: DRILL_ORG, name: "unseen" })).key;
    const models = [DRILL_BASE, ...[0, 1, 2].map(stack.adapterModel)];
    const running = startStreams(
      stack.send,
      models.map((model) => ({ model, maxTokens: 300 })),
    );
    await running.streaming;
    stack.pg.stop();

    // The drill's key was checked moments ago and the base needs no lookup: served from the caches.
    const cachedKey = await stack.send({ model: DRILL_BASE, maxTokens: 6 });
    expect(cachedKey.usage?.completion_tokens).toBe(6);
    // Its readiness probe says so, for a load balancer to send traffic to gateways that reach theirs.
    const readiness = await fetch(`${stack.gatewayUrl}/readyz`);
    expect(readiness.status).toBe(503);
    expect(await readiness.json()).toEqual({ ready: false, unavailable: ["database"] });
    const unseen = await stack.send({ model: DRILL_BASE, maxTokens: 6 }, unseenKey);
    expect(unseen).toMatchObject({ status: 503, error: { code: "database_unavailable" } });
    expect(unseen.error?.message).toContain("database");
    // An adapter's lookup is cached for 5 s; once it expires, requests for it wait for the database too.
    const adapterRequests: ChatOutcome[] = [];
    await vi.waitFor(
      async () => {
        const outcome = await stack.send({ model: models[1]!, maxTokens: 6 });
        adapterRequests.push(outcome);
        expect(outcome).toMatchObject({ status: 503, error: { code: "database_unavailable" } });
      },
      // Generous: the 5 s expiry counts from the streams' lookup, and each probe is a whole request that
      // shares a loaded machine with the running streams.
      { timeout: 45_000, interval: 1000 },
    );
    const finished = await Promise.all(running.outcomes);
    for (const outcome of finished) expect(outcome.usage?.completion_tokens).toBe(300);

    stack.pg.start();
    await vi.waitFor(async () => expect((await fetch(`${stack.gatewayUrl}/readyz`)).status).toBe(200), {
      timeout: 30_000,
      interval: 500,
    });
    const afterOutage = await stack.send({ model: models[2]!, maxTokens: 5 }, unseenKey);
    expect(afterOutage.usage?.completion_tokens).toBe(5);
    await expectBilledAsTold(stack.db, DRILL_ORG, [
      ...finished,
      cachedKey,
      unseen,
      ...adapterRequests,
      afterOutage,
    ]);
  }, 120_000);
});
