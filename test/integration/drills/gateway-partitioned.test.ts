// Drill: cut the gateway off NATS (a TCP proxy between them drops every connection and refuses new ones),
// then let it reconnect. NATS, the workers and their connections are untouched.
// Expected (docs/OPERATIONS.md, "Failure drills"): streams in flight end at once with an in-band 503
// `bus_unavailable` error; new requests get 503 `bus_unavailable` at once, not after a timeout; the worker
// learns of the cancels once the gateway is back and bills what it generated, once. After reconnection
// (the client retries every 2 s) requests succeed again.
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { expectBilledAsTold } from "../../support/drill-billing.ts";
import { type ChatOutcome, startStreams } from "../../support/drill-client.ts";
import { DRILL_BASE, DRILL_ORG, type DrillStack, startDrillStack } from "../../support/drill-stack.ts";
import { postgresBinaries } from "../../support/private-postgres.ts";
import { startTcpProxy, type TcpProxy } from "../../support/tcp-proxy.ts";

const bin = postgresBinaries();

describe("drill: the gateway cut off NATS", () => {
  if (!bin) {
    it.skip("needs PostgreSQL's server binaries (apt-get install postgresql)", () => {});
    return;
  }
  let stack: DrillStack;
  let proxy: TcpProxy | undefined;

  beforeAll(async () => {
    stack = await startDrillStack(bin, {
      adapters: 2,
      gatewayNatsUrl: async (nats) => {
        proxy = await startTcpProxy(nats.port);
        return `nats://127.0.0.1:${proxy.port}`;
      },
    });
    await stack.startWorker("a");
    await stack.liveWorkers(1);
  }, 120_000);

  afterAll(async () => {
    await stack?.close();
    await proxy?.close();
  });

  it("answers 503 bus_unavailable while cut off, and serves again once reconnected", async () => {
    const models = [DRILL_BASE, ...[0, 1].map(stack.adapterModel)];
    const running = startStreams(
      stack.send,
      models.map((model) => ({ model, maxTokens: 600 })),
    );
    await running.streaming;
    proxy!.cut();
    const duringCut = await Promise.all(models.map((model) => stack.send({ model, maxTokens: 6 })));
    for (const outcome of duringCut) {
      expect(outcome).toMatchObject({
        status: 503,
        error: { code: "bus_unavailable", type: "server_error" },
      });
      expect(outcome.error?.message).toContain("NATS");
    }
    const cut = await Promise.all(running.outcomes);
    for (const outcome of cut) {
      expect(outcome.contentChunks).toBeGreaterThan(0);
      expect(outcome.error).toMatchObject({ code: "bus_unavailable" });
    }

    proxy!.restore();
    const after: ChatOutcome[] = [];
    await vi.waitFor(
      async () => {
        const outcome = await stack.send({ model: models[1]!, maxTokens: 8 });
        after.push(outcome);
        expect(outcome.usage?.completion_tokens).toBe(8);
      },
      { timeout: 20_000, interval: 500 },
    );
    for (const outcome of after.slice(0, -1)) expect(outcome.error?.code).toBe("bus_unavailable");

    await expectBilledAsTold(stack.db, DRILL_ORG, [...cut, ...duringCut, ...after]);
  });
});
