// OpenAI's prompt_cache_key through app.request on the in-process bus, four scripted workers of one base:
// an org's requests naming the same key go to one worker (its prefix cache), chat and Responses alike;
// different keys spread the org over the workers; without a key the org keeps to its one worker; a key
// too long is refused and runs nothing.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { InProcessBroker } from "../../bus/in-process.ts";
import { FakeWorker } from "../support/fake-worker.ts";
import { BASE, createGatewayHarness, type GatewayHarness } from "../support/gateway-harness.ts";

let h: GatewayHarness;
let app: ReturnType<GatewayHarness["appWith"]>;
const workers: FakeWorker[] = [];
const broker = new InProcessBroker();
const gatewayBus = broker.connect();
const workerBus = broker.connect();

beforeAll(async () => {
  h = await createGatewayHarness();
  app = h.appWith({ bus: gatewayBus });
  for (let i = 0; i < 4; i++)
    workers.push(await FakeWorker.start(workerBus, { base: BASE, workerId: `w-${i}` }));
});
afterAll(async () => {
  await Promise.all(workers.map((w) => w.stop()));
  await gatewayBus.close();
  await workerBus.close();
  await h.close();
});

function post(path: string, body: Record<string, unknown>) {
  return app.request(path, {
    method: "POST",
    headers: { authorization: `Bearer ${h.keys.acme}`, "content-type": "application/json" },
    body: JSON.stringify({ model: BASE, ...body }),
  });
}

const chat = (body: Record<string, unknown> = {}) =>
  post("/v1/chat/completions", { messages: [{ role: "user", content: "Hi" }], max_tokens: 1, ...body });

/** The ids of the workers that ran each of `send`'s requests, in order. */
async function placements(
  count: number,
  send: (i: number) => Response | Promise<Response>,
): Promise<string[]> {
  const placed: string[] = [];
  for (let i = 0; i < count; i++) {
    const before = workers.map((w) => w.received.length);
    const res = await send(i);
    expect(res.status).toBe(200);
    await res.arrayBuffer();
    const ran = workers.filter((w, k) => w.received.length > before[k]!);
    expect(ran).toHaveLength(1);
    placed.push(ran[0]!.workerId);
  }
  return placed;
}

describe("prompt_cache_key", () => {
  it("sends an org's requests naming one key to one worker, chat and Responses alike", async () => {
    const [orgWorker] = await placements(1, () => chat());
    // A key whose worker is not the org's own, so that following it shows.
    let key = "";
    let keyWorker = orgWorker;
    for (let i = 0; keyWorker === orgWorker; i++) {
      key = `support-bot-${i}`;
      [keyWorker] = await placements(1, () => chat({ prompt_cache_key: key }));
    }
    const placed = await placements(6, (i) =>
      i % 2 === 0
        ? chat({ prompt_cache_key: key })
        : post("/v1/responses", { input: "Hi", max_output_tokens: 1, prompt_cache_key: key }),
    );
    expect(placed).toEqual(Array(6).fill(keyWorker));
  });

  it("spreads an org's different keys over the workers, and keeps the org to one without a key", async () => {
    const keyed = await placements(24, (i) => chat({ prompt_cache_key: `family-${i}` }));
    expect(new Set(keyed).size).toBeGreaterThan(1);
    const plain = await placements(6, () => chat());
    expect(new Set(plain).size).toBe(1);
  });

  it("refuses a key over 1,024 characters and runs nothing", async () => {
    const before = workers.map((w) => w.received.length);
    const res = await chat({ prompt_cache_key: "k".repeat(1025) });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: { param: string } }).error.param).toBe("prompt_cache_key");
    expect(workers.map((w) => w.received.length)).toEqual(before);
  });
});
