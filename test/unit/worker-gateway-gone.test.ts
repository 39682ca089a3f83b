// A running request whose gateway is gone (it died: nothing listens on the reply inbox any more) is
// cancelled by its worker at its next check, billed for what it generated, rather than generated to its
// max_tokens for nobody.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
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

it("cancels a running request once nothing listens for its reply, billing what it generated", async () => {
  const billed: UsageEvent[] = [];
  const usage = await h.bus.consumeUsage(async (event) => {
    billed.push(event);
  });
  const inbox = await h.bus.openReplyInbox();
  const now = Date.now();
  const request = sampleRequest({
    id: "orphaned",
    base: BASE,
    adapter: null,
    prompt_token_ids: [5, 6, 7],
    reply: inbox.subject,
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
  await h.bus.publishRequest(request, "w");
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
