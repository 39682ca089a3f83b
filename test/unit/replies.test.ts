// A worker's reply stream: the usage event is stored before the Final, and a bus that refuses it for a long
// time (NATS down) delays the Final without losing the usage — attempts go on until it is stored.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { InProcessBroker } from "../../bus/in-process.ts";
import type { Reply, UsageEvent } from "../../schema/wire.ts";
import { initTinyModel } from "../../scripts/tiny-model.ts";
import { loadTokenizer } from "../../worker/engine/tokenizer.ts";
import { ReplyStream } from "../../worker/replies.ts";
import { UsageSender } from "../../worker/usage-sender.ts";
import { sampleRequest } from "../contract/wire-samples.ts";
import { failUsagePublishes } from "../support/flaky-usage.ts";

const root = mkdtempSync(join(tmpdir(), "luminet-replies-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));
const tokenizer = loadTokenizer(
  initTinyModel(join(root, "model"), { shape: "tiny", adapters: 0, rank: 4, seed: 1 }).dir,
);

describe("a worker's reply stream", () => {
  it("keeps trying to store the usage event through a long outage, then sends the Final", async () => {
    const broker = new InProcessBroker();
    const gateway = broker.connect();
    const worker = broker.connect();
    const attempts = failUsagePublishes(worker, (attempt) => attempt <= 25);
    const stored: UsageEvent[] = [];
    const metering = await gateway.consumeUsage(async (event) => {
      stored.push(event);
    });
    const inbox = await gateway.openReplyInbox();
    const request = sampleRequest({ id: "long-outage", reply: inbox.subject });
    const replies = new ReplyStream(
      worker,
      request,
      { workerId: "w1", incarnation: "i1" },
      tokenizer,
      new UsageSender(worker, null, { firstMs: 1, maxMs: 4 }),
    );
    expect(await replies.claim()).toBe(true);
    replies.send(null, "hello");
    const received: Reply[] = [];
    const reading = (async () => {
      for await (const reply of inbox) received.push(reply);
    })();

    await replies.finish({ finishReason: "stop", promptTokens: 3, cachedPromptTokens: 0, outputTokens: 1 });
    await reading;
    expect(attempts()).toBe(26);
    expect(received.map((r) => r.type)).toEqual(["chunk", "final"]);
    await expect.poll(() => stored.length).toBe(1);
    expect(stored[0]).toMatchObject({ request_id: "long-outage", input_tokens: 3, output_tokens: 1 });
    await metering.close();
    await Promise.all([gateway.close(), worker.close()]);
  });
});
