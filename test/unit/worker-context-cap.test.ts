// A worker asked for a longer context than its model was built for (--max-context past
// max_position_embeddings) serves the model's own: a prompt that fills the model's positions is refused
// with the model's context named, rather than run past where the model can place tokens.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import { type Final, greedySampling, WIRE_VERSION } from "../../schema/wire.ts";
import { loadModelConfig } from "../../worker/engine/model-config.ts";
import { LuminetWorker } from "../../worker/main.ts";
import { BASE, createGatewayHarness, type GatewayHarness } from "../support/gateway-harness.ts";
import { tinyWorkerOptions } from "../support/tiny-worker.ts";

let h: GatewayHarness;
let root: string;
let worker: LuminetWorker;

beforeAll(async () => {
  h = await createGatewayHarness();
  root = mkdtempSync(join(tmpdir(), "luminet-context-cap-"));
});
afterAll(async () => {
  await worker?.drain();
  await h.close();
  rmSync(root, { recursive: true, force: true });
});

it("caps --max-context at the model's own context", async () => {
  const { maxPositions } = loadModelConfig(h.modelDir);
  worker = await LuminetWorker.start(
    tinyWorkerOptions(h, root, { workerId: "capped", maxContext: 2 * maxPositions }),
  );
  const inbox = await h.workerBus.openReplyInbox();
  await h.workerBus.publishRequest(
    {
      v: WIRE_VERSION,
      id: "past-the-model",
      org: "acme",
      api_key_id: "key-1",
      base: BASE,
      adapter: null,
      prompt_token_ids: new Array(maxPositions).fill(3),
      sampling: greedySampling(4),
      reply: inbox.subject,
      created_at: Date.now(),
      deadline: Date.now() + 60_000,
    },
    "capped",
  );
  let final: Final | undefined;
  for await (const reply of inbox) if (reply.type === "final") final = reply;
  expect(final?.finish_reason).toBe("error");
  expect(final?.error?.message).toContain(`this worker's context holds ${maxPositions},`);
});
