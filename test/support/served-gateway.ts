// A gateway served over HTTP with a scripted worker behind it and an official `openai` client for each of
// two orgs (acme's key, other's): the setup shared by the tests of the OpenAI-shaped routes.
import OpenAI from "openai";
import { type ServedApp, serveApp } from "../../gateway/node.ts";
import { FakeWorker } from "./fake-worker.ts";
import { BASE, createGatewayHarness, type GatewayHarness } from "./gateway-harness.ts";

export interface ServedGateway {
  h: GatewayHarness;
  worker: FakeWorker;
  served: ServedApp;
  /** acme's key. */
  client: OpenAI;
  /** other's key. */
  otherClient: OpenAI;
  close(): Promise<void>;
}

/** Serves the harness's app on a free port, with acme's adapters named in `adapters` added. */
export async function serveGateway(options: { adapters?: readonly string[] } = {}): Promise<ServedGateway> {
  const h = await createGatewayHarness();
  const worker = await FakeWorker.start(h.workerBus, { base: BASE });
  for (const name of options.adapters ?? []) await h.addAdapter({ name });
  const served = await serveApp(h.app, 0, "127.0.0.1");
  const clientFor = (apiKey: string) => new OpenAI({ apiKey, baseURL: `${served.url}/v1`, maxRetries: 0 });
  return {
    h,
    worker,
    served,
    client: clientFor(h.keys.acme),
    otherClient: clientFor(h.keys.other),
    async close() {
      await served.close();
      await worker.stop();
      await h.close();
    },
  };
}
