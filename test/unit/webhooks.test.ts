// Webhooks end to end in one process (in-process bus, scripted worker, a real HTTP receiver): endpoints
// managed through /v1/webhooks by admin keys of their own org, private URLs refused; a batch's and a
// background response's end delivered to the endpoints that take the event, signed so that the official
// `openai` SDK's webhooks.unwrap accepts them; a refused delivery retried later under the same event id and
// given up after 72 hours; a host that resolves to a private address refused at delivery; signing secrets
// sealed at rest under the operator's key, and a sender without it delivering nothing until it has it.
import { once } from "node:events";
import { createServer, type IncomingHttpHeaders, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { eq } from "drizzle-orm";
import OpenAI from "openai";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { BatchRunner } from "../../gateway/batch-runner.ts";
import { quietMetrics } from "../../gateway/quiet-metrics.ts";
import { SecretBox } from "../../gateway/secret-box.ts";
import { WebhookSender } from "../../gateway/webhook-sender.ts";
import { createWebhook } from "../../gateway/webhooks.ts";
import { webhookDeliveries, webhookEndpoints } from "../../schema/db.ts";
import type { CreatedWebhook, WebhookObject } from "../../schema/webhook-api.ts";
import { FakeWorker } from "../support/fake-worker.ts";
import { BASE, createGatewayHarness, type GatewayHarness } from "../support/gateway-harness.ts";

let h: GatewayHarness;
let worker: FakeWorker;
let app: ReturnType<GatewayHarness["appWith"]>;
let receiver: Receiver;
let clock = Date.now();
const now = () => clock;
/** The operator's LUMINET_SECRETS_KEY, which the gateway seals signing secrets with and its senders open them. */
const SECRETS = new SecretBox(Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString("base64"));

interface Received {
  path: string;
  headers: IncomingHttpHeaders;
  body: string;
}

/** An HTTP server that records what it is sent and answers each request with the next status queued (200 once none is). */
class Receiver {
  readonly received: Received[] = [];
  readonly statuses: number[] = [];
  constructor(readonly server: Server) {}

  static async start(): Promise<Receiver> {
    const receiver: Receiver = new Receiver(
      createServer((req, res) => {
        const chunks: Buffer[] = [];
        req.on("data", (chunk: Buffer) => chunks.push(chunk));
        req.on("end", () => {
          receiver.received.push({
            path: req.url ?? "",
            headers: req.headers,
            body: Buffer.concat(chunks).toString(),
          });
          res.writeHead(receiver.statuses.shift() ?? 200).end();
        });
      }),
    );
    receiver.server.listen(0, "127.0.0.1");
    await once(receiver.server, "listening");
    return receiver;
  }

  url(path: string): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}${path}`;
  }

  at(path: string): Received[] {
    return this.received.filter((r) => r.path === path);
  }
}

beforeAll(async () => {
  h = await createGatewayHarness();
  worker = await FakeWorker.start(h.workerBus, { base: BASE });
  app = h.appWith({ allowPrivateWebhooks: true, now, secrets: SECRETS });
  receiver = await Receiver.start();
});
afterAll(async () => {
  receiver.server.close();
  await worker.stop();
  await h.close();
});
afterEach(async () => {
  outcomes.length = 0;
  receiver.received.length = 0;
  receiver.statuses.length = 0;
  // Endpoints go with what they had not been sent.
  await h.db.delete(webhookEndpoints);
});

function call(path: string, key: string, init: { method?: string; body?: unknown } = {}, on = app) {
  return on.request(path, {
    method: init.method ?? (init.body === undefined ? "GET" : "POST"),
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
    ...(init.body === undefined ? {} : { body: JSON.stringify(init.body) }),
  });
}

async function createEndpoint(body: object): Promise<CreatedWebhook> {
  const res = await call("/v1/webhooks", h.keys.acmeAdmin, { body });
  expect(res.status).toBe(201);
  return (await res.json()) as CreatedWebhook;
}

/** The senders' attempts by outcome, as Prometheus would count them. */
const outcomes: string[] = [];

function sender(allowPrivate = true, secrets = SECRETS): WebhookSender {
  const metrics = quietMetrics({ webhookDelivery: (outcome) => void outcomes.push(outcome) });
  return new WebhookSender({ db: h.db, log: h.deps.log, metrics, allowPrivate, secrets, now });
}

function batchRunner(): BatchRunner {
  return new BatchRunner({
    app,
    db: h.db,
    log: h.deps.log,
    concurrency: 2,
    leaseMs: 60_000,
    newId: h.deps.newRequestId,
    runnerId: "webhooks-test",
    now,
  });
}

/** A batch of chat lines created through the API; its id. */
async function createBatch(lines: number): Promise<string> {
  const form = new FormData();
  form.set("purpose", "batch");
  const body = Array.from({ length: lines }, (_, k) =>
    JSON.stringify({
      custom_id: `line-${k}`,
      method: "POST",
      url: "/v1/chat/completions",
      body: { model: BASE, messages: [{ role: "user", content: `hi ${k}` }], max_tokens: 2 },
    }),
  ).join("\n");
  form.set("file", new Blob([`${body}\n`]), "in.jsonl");
  const file = await app.request("/v1/files", {
    method: "POST",
    headers: { authorization: `Bearer ${h.keys.acme}` },
    body: form,
  });
  const { id } = (await file.json()) as { id: string };
  const batch = await call("/v1/batches", h.keys.acme, {
    body: { input_file_id: id, endpoint: "/v1/chat/completions", completion_window: "24h" },
  });
  return ((await batch.json()) as { id: string }).id;
}

const sdk = new OpenAI({ apiKey: "unused" });

describe("/v1/webhooks", () => {
  it("creates an endpoint whose secret is shown once, lists and deletes it, for admin keys of its org only", async () => {
    const created = await createEndpoint({
      url: "https://hooks.example.com/luminet",
      events: ["batch.completed"],
    });
    expect(created).toMatchObject({
      object: "webhook_endpoint",
      url: "https://hooks.example.com/luminet",
      events: ["batch.completed"],
    });
    expect(created.id).toMatch(/^whep_/);
    expect(created.secret).toMatch(/^whsec_[A-Za-z0-9+/]{43}=$/);
    const listed = (await (await call("/v1/webhooks", h.keys.acmeAdmin)).json()) as { data: WebhookObject[] };
    const mine = listed.data.find((w) => w.id === created.id)!;
    expect(mine).not.toHaveProperty("secret");
    expect(JSON.stringify(listed)).not.toContain(created.secret);
    // Kept sealed: the database alone does not give the secret away.
    const [row] = await h.db.select().from(webhookEndpoints).where(eq(webhookEndpoints.id, created.id));
    expect(row!.secret).toMatch(/^sealed1:/);
    expect(row!.secret).not.toContain(created.secret.slice("whsec_".length));

    expect((await call("/v1/webhooks", h.keys.acme)).status).toBe(403);
    expect((await call(`/v1/webhooks/${created.id}`, h.keys.acme, { method: "DELETE" })).status).toBe(403);
    const deleted = await call(`/v1/webhooks/${created.id}`, h.keys.acmeAdmin, { method: "DELETE" });
    expect(await deleted.json()).toEqual({
      id: created.id,
      object: "webhook_endpoint.deleted",
      deleted: true,
    });
    expect((await call(`/v1/webhooks/${created.id}`, h.keys.acmeAdmin, { method: "DELETE" })).status).toBe(
      404,
    );
  });

  it("refuses a URL that is not http(s), an unknown event type, and private addresses unless allowed", async () => {
    const refused = async (body: object, on = app) => {
      const res = await call("/v1/webhooks", h.keys.acmeAdmin, { body }, on);
      expect(res.status).toBe(400);
      return ((await res.json()) as { error: { param: string } }).error.param;
    };
    expect(await refused({ url: "ftp://example.com/x" })).toBe("url");
    expect(await refused({ url: "https://example.com/x", events: ["batch.started"] })).toBe("events.0");
    for (const url of [
      "http://localhost:9/x",
      "http://10.1.2.3/x",
      "http://169.254.169.254/latest",
      "http://[::1]/x",
    ]) {
      expect(await refused({ url }, h.app)).toBe("url");
    }
    const res = await call(
      "/v1/webhooks",
      h.keys.acmeAdmin,
      { body: { url: "https://example.com/x" } },
      h.app,
    );
    expect(res.status).toBe(201);
    await call(`/v1/webhooks/${((await res.json()) as { id: string }).id}`, h.keys.acmeAdmin, {
      method: "DELETE",
    });
  });
});

describe("deliveries", () => {
  it("tells each endpoint that takes the event of a batch's end, signed as the openai SDK checks", async () => {
    const all = await createEndpoint({ url: receiver.url("/all") });
    const batchOnly = await createEndpoint({ url: receiver.url("/batches"), events: ["batch.completed"] });
    const responsesOnly = await createEndpoint({
      url: receiver.url("/responses"),
      events: ["response.completed"],
    });
    // Another org's endpoint hears nothing of acme's batch.
    await createWebhook({ ...h.deps, allowPrivateWebhooks: true }, "other", { url: receiver.url("/other") });

    const batch = await createBatch(2);
    await batchRunner().drain();
    expect(await sender().drain()).toBe(2);
    expect(receiver.at("/responses")).toEqual([]);
    expect(receiver.at("/other")).toEqual([]);
    for (const [path, endpoint] of [
      ["/all", all],
      ["/batches", batchOnly],
    ] as const) {
      const [delivery] = receiver.at(path);
      const event = await sdk.webhooks.unwrap(
        delivery!.body,
        delivery!.headers as Record<string, string>,
        endpoint.secret,
      );
      expect(event).toMatchObject({ object: "event", type: "batch.completed", data: { id: batch } });
      expect(delivery!.headers["webhook-id"]).toBe(event.id);
      // Another endpoint's secret does not check out.
      await expect(
        sdk.webhooks.unwrap(
          delivery!.body,
          delivery!.headers as Record<string, string>,
          responsesOnly.secret,
        ),
      ).rejects.toThrow();
    }
    // Delivered once: nothing is due any more.
    expect(await sender().drain()).toBe(0);
  });

  it("tells of a background response's end by the status it ended with", async () => {
    const endpoint = await createEndpoint({ url: receiver.url("/bg") });
    const queued = await call("/v1/responses", h.keys.acme, {
      body: { model: BASE, input: "later", max_output_tokens: 2, background: true },
    });
    const { id } = (await queued.json()) as { id: string };
    await batchRunner().drain();
    await sender().drain();
    const [delivery] = receiver.at("/bg");
    const event = await sdk.webhooks.unwrap(
      delivery!.body,
      delivery!.headers as Record<string, string>,
      endpoint.secret,
    );
    expect(event).toMatchObject({ type: "response.incomplete", data: { id } });
  });

  it("sends nothing where the sender cannot open the sealed secret, says why, and delivers once it can", async () => {
    const endpoint = await createEndpoint({ url: receiver.url("/sealed") });
    await createBatch(1);
    await batchRunner().drain();
    expect(await sender(true, new SecretBox(undefined)).drain()).toBe(1);
    expect(receiver.at("/sealed")).toEqual([]);
    const [row] = await h.db
      .select()
      .from(webhookDeliveries)
      .where(eq(webhookDeliveries.endpointId, endpoint.id));
    expect(row!.lastError).toContain("no LUMINET_SECRETS_KEY");
    expect(row!.lastError).not.toContain(endpoint.secret);
    clock += 5_000;
    expect(await sender().drain()).toBe(1);
    const [delivery] = receiver.at("/sealed");
    await sdk.webhooks.unwrap(delivery!.body, delivery!.headers as Record<string, string>, endpoint.secret);
    expect(outcomes).toEqual(["retried", "delivered"]);
  });

  it("sends one delivery at a time to each endpoint, so a slow endpoint's queue delays no other endpoint", async () => {
    // An endpoint that never answers, with six events waiting since a minute ago; another, with one since now.
    const hanging = new Set<ServerResponse>();
    const slowServer = createServer((_req, res) => void hanging.add(res));
    slowServer.listen(0, "127.0.0.1");
    await once(slowServer, "listening");
    const slow = await createEndpoint({
      url: `http://127.0.0.1:${(slowServer.address() as AddressInfo).port}/slow`,
    });
    const fast = await createEndpoint({ url: receiver.url("/fast") });
    const queue = (endpointId: string, count: number, since: number) =>
      h.db.insert(webhookDeliveries).values(
        Array.from({ length: count }, (_, k) => {
          const id = `evt_${endpointId.slice(-6)}${k}`;
          const payload = { id, object: "event", type: "batch.completed", created_at: 0, data: { id: "b" } };
          return {
            eventId: id,
            endpointId,
            type: "batch.completed",
            payload,
            nextAttemptAt: new Date(since + k),
          };
        }),
      );
    await queue(slow.id, 6, clock - 60_000);
    await queue(fast.id, 1, clock);
    const turns = new WebhookSender({
      db: h.db,
      log: h.deps.log,
      allowPrivate: true,
      secrets: SECRETS,
      now,
      concurrency: 4,
      pollMs: 10,
      // Were the slow endpoint's deliveries to take every place, the other's would wait a whole minute for
      // them to time out: far past the deadline below, which leaves a loaded machine time to spare.
      timeoutMs: 60_000,
    });
    turns.start();
    try {
      for (const deadline = Date.now() + 20_000; receiver.at("/fast").length === 0; ) {
        expect(Date.now(), "the other endpoint's event waited behind the slow one's").toBeLessThan(deadline);
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      // The slow endpoint holds one of the four places, never more.
      expect(hanging.size).toBe(1);
    } finally {
      for (const res of hanging) res.socket?.destroy();
      slowServer.close();
      await turns.stop();
    }
  });

  it("tries a refused delivery again later under the same event id, and gives up 72 hours after the event", async () => {
    const endpoint = await createEndpoint({ url: receiver.url("/flaky") });
    await createBatch(1);
    await batchRunner().drain();
    receiver.statuses.push(500);
    expect(await sender().drain()).toBe(1);
    // Not due again until its delay has passed.
    clock += 4_000;
    expect(await sender().drain()).toBe(0);
    clock += 1_000;
    expect(await sender().drain()).toBe(1);
    const [first, second] = receiver.at("/flaky");
    expect(second!.headers["webhook-id"]).toBe(first!.headers["webhook-id"]);
    await sdk.webhooks.unwrap(second!.body, second!.headers as Record<string, string>, endpoint.secret);
    const [row] = await h.db
      .select()
      .from(webhookDeliveries)
      .where(eq(webhookDeliveries.endpointId, endpoint.id));
    expect(row).toMatchObject({ attempts: 2, lastError: null });
    expect(outcomes).toEqual(["retried", "delivered"]);
    expect(row!.deliveredAt).not.toBeNull();

    // An endpoint that never answers 2xx: retried with growing waits, then given up.
    await call(`/v1/webhooks/${endpoint.id}`, h.keys.acmeAdmin, { method: "DELETE" });
    const down = await createEndpoint({ url: receiver.url("/down") });
    await createBatch(1);
    await batchRunner().drain();
    let tries = 0;
    for (let hour = 0; hour < 80; hour++) {
      receiver.statuses.push(...Array(10).fill(503));
      tries += await sender().drain();
      clock += 60 * 60_000;
    }
    const [gone] = await h.db
      .select()
      .from(webhookDeliveries)
      .where(eq(webhookDeliveries.endpointId, down.id));
    expect(gone!.failedAt).not.toBeNull();
    expect(gone!.deliveredAt).toBeNull();
    expect(gone!.lastError).toBe("HTTP 503");
    expect(gone!.attempts).toBe(tries);
    expect(outcomes.slice(2)).toEqual([...Array(tries - 1).fill("retried"), "failed"]);
    expect(gone!.failedAt!.getTime() - gone!.createdAt.getTime()).toBeLessThanOrEqual(
      72 * 60 * 60_000 + 60 * 60_000,
    );
  });

  it("refuses at delivery an endpoint whose host is a private address, unless private webhooks are allowed", async () => {
    const endpoint = await createEndpoint({ url: receiver.url("/private") });
    // A name resolved as the connection is made (the address checked is the one connected to).
    const named = await createEndpoint({ url: receiver.url("/named").replace("127.0.0.1", "localhost") });
    await createBatch(1);
    await batchRunner().drain();
    expect(await sender(false).drain()).toBe(2);
    expect(receiver.at("/private")).toEqual([]);
    expect(receiver.at("/named")).toEqual([]);
    for (const [id, host] of [
      [endpoint.id, "127.0.0.1"],
      [named.id, "localhost"],
    ]) {
      const [row] = await h.db.select().from(webhookDeliveries).where(eq(webhookDeliveries.endpointId, id!));
      expect(row!.lastError).toBe(`refused: ${host} resolves to a private address`);
    }
  });

  it("keeps deliveries that ended for 30 days, and never deletes one still to be sent", async () => {
    await createEndpoint({ url: receiver.url("/kept") });
    await createBatch(1);
    await batchRunner().drain();
    expect(await sender().drain()).toBe(1);
    // A second event, not yet sent (no sender ran since).
    await createBatch(1);
    await batchRunner().drain();
    const rows = async () =>
      (await h.db.select().from(webhookDeliveries)).map((r) => (r.deliveredAt ? "delivered" : "pending"));
    expect((await rows()).sort()).toEqual(["delivered", "pending"]);
    clock += 29 * 24 * 60 * 60_000;
    expect(await sender().sweepIfDue()).toBe(0);
    clock += 2 * 24 * 60 * 60_000;
    expect(await sender().sweepIfDue()).toBe(1);
    expect(await rows()).toEqual(["pending"]);
  });
});
