// A running request whose gateway is gone (it died: nothing listens on the reply inbox any more) is
// cancelled by its worker at its next check, billed for what it generated, rather than generated to its
// max_tokens for nobody — and at once when the worker's bus reconnects (a cancel sent while NATS was down
// may have been lost), not at its next periodic check.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import type { Bus } from "../../bus/bus.ts";
import type { UsageEvent } from "../../schema/wire.ts";
import { LuminetWorker } from "../../worker/main.ts";
import { sampleRequest } from "../contract/wire-samples.ts";
import { BASE, createGatewayHarness, type GatewayHarness } from "../support/gateway-harness.ts";
import { tinyWorkerOptions } from "../support/tiny-worker.ts";

const MAX_TOKENS = 4000;
let h: GatewayHarness;
let root: string;
let worker: LuminetWorker;

beforeAll(async () => {
  h = await createGatewayHarness();
  root = mkdtempSync(join(tmpdir(), "luminet-gateway-gone-"));
  worker = await LuminetWorker.start(
    tinyWorkerOptions(h, root, { workerId: "w", maxContext: MAX_TOKENS + 64, replyCheckMs: 50 }),
  );
});
afterAll(async () => {
  await worker.drain();
  await h.close();
  rmSync(root, { recursive: true, force: true });
});

/** A request for the tiny model that runs to MAX_TOKENS unless cancelled. */
function longRequest(id: string, reply: string) {
  const now = Date.now();
  return sampleRequest({
    id,
    base: BASE,
    adapter: null,
    prompt_token_ids: [5, 6, 7],
    reply,
    created_at: now,
    deadline: now + 600_000,
    sampling: {
      ...sampleRequest().sampling,
      max_tokens: MAX_TOKENS,
      ignore_eos: true,
      stop: [],
      stop_token_ids: [],
      logprobs: false,
      top_logprobs: 0,
    },
  });
}

it("cancels a running request once nothing listens for its reply, billing what it generated", async () => {
  const billed: UsageEvent[] = [];
  const usage = await h.bus.consumeUsage(async (event) => {
    billed.push(event);
  });
  const inbox = await h.bus.openReplyInbox();
  await h.bus.publishRequest(longRequest("orphaned", inbox.subject), "w");
  const chunks = inbox[Symbol.asyncIterator]();
  expect((await chunks.next()).value).toMatchObject({ type: "chunk" });
  // The gateway dies: its inbox stops listening, with no cancel sent.
  inbox.close();
  await expect.poll(() => billed.map((e) => e.request_id), { timeout: 30_000 }).toContain("orphaned");
  const event = billed.find((e) => e.request_id === "orphaned")!;
  expect(event.finish_reason).toBe("cancelled");
  expect(event.output_tokens).toBeGreaterThan(0);
  expect(event.output_tokens).toBeLessThan(MAX_TOKENS);
  await usage.close();
});

/** A method of the in-process bus, called on the bus itself (its private fields are not the proxy's). */
const bound = (value: unknown, target: object) =>
  typeof value === "function" ? (value as (...args: unknown[]) => unknown).bind(target) : value;

it("asks at once, when its bus reconnects, whether each running request is still wanted", async () => {
  const reconnected = new Set<() => void>();
  // The in-process bus never drops; this one says it reconnected when the test says so.
  const bus: Bus = new Proxy(h.workerBus, {
    get: (target, property, receiver) =>
      property === "onReconnect"
        ? (listener: () => void) => {
            reconnected.add(listener);
            return { close: async () => void reconnected.delete(listener) };
          }
        : bound(Reflect.get(target, property, receiver), target),
  });
  const slow = await LuminetWorker.start(
    tinyWorkerOptions(h, mkdtempSync(join(root, "slow-")), {
      workerId: "w-reconnects",
      bus,
      maxContext: MAX_TOKENS + 64,
      // Far longer than the run: only the reconnect can stop it early.
      replyCheckMs: 600_000,
    }),
  );
  const billed: UsageEvent[] = [];
  const usage = await h.bus.consumeUsage(async (event) => {
    billed.push(event);
  });
  try {
    const inbox = await h.bus.openReplyInbox();
    await h.bus.publishRequest(longRequest("cut-by-restart", inbox.subject), "w-reconnects");
    const chunks = inbox[Symbol.asyncIterator]();
    expect((await chunks.next()).value).toMatchObject({ type: "chunk" });
    // The gateway gave up on it while NATS was down; its cancel never arrived.
    inbox.close();
    expect(reconnected.size).toBe(1);
    for (const listener of reconnected) listener();
    await expect.poll(() => billed.map((e) => e.request_id), { timeout: 30_000 }).toContain("cut-by-restart");
    const event = billed.find((e) => e.request_id === "cut-by-restart")!;
    expect(event.finish_reason).toBe("cancelled");
    expect(event.output_tokens).toBeLessThan(MAX_TOKENS);
  } finally {
    await usage.close();
    await slow.drain();
  }
});
