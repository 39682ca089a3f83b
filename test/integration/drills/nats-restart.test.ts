// Drill: restart nats-server (stop it, start it again on the same port and store) while requests stream.
// Expected (docs/OPERATIONS.md, "Failure drills"): the gateway sees its connection drop and ends every
// stream in flight with an in-band 503 `bus_unavailable` error at once (replies sent meanwhile are lost);
// requests arriving while the server is down get 503 `bus_unavailable` at once. Every process reconnects by
// itself; what JetStream stored (usage events) survives, so each request is billed once: the worker bills
// what it generated until the gateway's cancel reached it. New requests succeed once heartbeats are back.
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { expectBilledAsTold } from "../../support/drill-billing.ts";
import { type ChatOutcome, startStreams } from "../../support/drill-client.ts";
import { DRILL_BASE, DRILL_ORG, type DrillStack, startDrillStack } from "../../support/drill-stack.ts";
import { postgresBinaries } from "../../support/private-postgres.ts";

const bin = postgresBinaries();
const LONG = 600;

describe("drill: nats-server restarted while requests stream", () => {
  if (!bin) {
    it.skip("needs PostgreSQL's server binaries (apt-get install postgresql)", () => {});
    return;
  }
  let stack: DrillStack;

  beforeAll(async () => {
    stack = await startDrillStack(bin, { adapters: 3 });
    await Promise.all([stack.startWorker("a"), stack.startWorker("b")]);
    await stack.liveWorkers(2);
  }, 120_000);

  afterAll(async () => {
    await stack?.close();
  });

  it("ends the streams it cut with a clear error, refuses new ones at once, recovers, bills once", async () => {
    const models = [DRILL_BASE, ...[0, 1, 2].map(stack.adapterModel)];
    const running = startStreams(
      stack.send,
      models.map((model) => ({ model, maxTokens: LONG })),
    );
    await running.streaming;
    await stack.nats.stop();
    const whileDown = await Promise.all(models.map((model) => stack.send({ model, maxTokens: 6 })));
    await stack.nats.start();

    const cut = await Promise.all(running.outcomes);
    for (const outcome of cut) {
      expect(outcome.contentChunks).toBeGreaterThan(0);
      expect(outcome.error).toMatchObject({ code: "bus_unavailable", type: "server_error" });
    }
    for (const outcome of whileDown) {
      expect(outcome).toMatchObject({ status: 503, error: { code: "bus_unavailable" } });
      expect(outcome.error?.message).toContain("NATS");
    }
    // Recovery: new requests complete once the workers' heartbeats are back.
    const after: ChatOutcome[] = [];
    await vi.waitFor(
      async () => {
        const outcome = await stack.send({ model: models[1]!, maxTokens: 8 });
        after.push(outcome);
        expect(outcome.usage?.completion_tokens).toBe(8);
      },
      { timeout: 20_000, interval: 500 },
    );
    for (const outcome of after.slice(0, -1)) expect(outcome.status).toBe(503);

    await expectBilledAsTold(stack.db, DRILL_ORG, [...cut, ...whileDown, ...after]);
  });
});
