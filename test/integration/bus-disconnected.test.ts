// The JetStream bus while its connection is down: a gateway's calls fail at once with BusUnavailableError
// instead of waiting out a timeout, an open reply inbox fails with it (the replies sent meanwhile are
// lost), and everything works again once the client has reconnected by itself, which it reports. The test stops and starts
// a nats-server of its own (test/support/private-nats.ts). A gateway on such a bus is not ready (/readyz).
import { Hono } from "hono";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { type Bus, BusUnavailableError } from "../../bus/bus.ts";
import { connectJetStreamBus } from "../../bus/jetstream.ts";
import { type Db, openDb } from "../../db/open.ts";
import type { GatewayEnv } from "../../gateway/context.ts";
import { readinessRoute } from "../../gateway/readiness.ts";
import { sampleRequest } from "../contract/wire-samples.ts";
import { createPrivateNats, type PrivateNats } from "../support/private-nats.ts";

const BASE = "hf:Qwen/Qwen2.5-0.5B";

describe("JetStream bus while disconnected from NATS", () => {
  let nats: PrivateNats;
  let bus: Bus;

  let db: Db;
  /** The gateway's readiness route on this bus and a database that stays up. */
  let readiness: Hono<GatewayEnv>;

  beforeAll(async () => {
    nats = await createPrivateNats();
    await nats.start();
    bus = await connectJetStreamBus({ servers: nats.url });
    db = await openDb("pglite:memory");
    readiness = new Hono<GatewayEnv>().get("/readyz", readinessRoute({ bus, db }));
  });

  afterAll(async () => {
    await bus?.close();
    await db?.close();
    await nats?.destroy();
  });

  it("fails at once with BusUnavailableError, and serves again after reconnecting", async () => {
    let reconnects = 0;
    const following = bus.onReconnect(() => reconnects++);
    expect(await bus.liveHeartbeats(BASE)).toEqual([]);
    const inbox = await bus.openReplyInbox();
    const reading = expect(inbox[Symbol.asyncIterator]().next()).rejects.toThrow(BusUnavailableError);

    await nats.stop();
    await reading;
    await expect(bus.openReplyInbox()).rejects.toThrow(BusUnavailableError);
    await expect(bus.publishRequest(sampleRequest({ base: BASE }), "w1")).rejects.toThrow(
      /not connected to NATS/,
    );
    await expect(bus.liveHeartbeats(BASE)).rejects.toThrow(BusUnavailableError);
    // A gateway on this bus is not ready: a load balancer sends its traffic elsewhere.
    const notReady = await readiness.request("/readyz");
    expect(notReady.status).toBe(503);
    expect(await notReady.json()).toEqual({ ready: false, unavailable: ["bus"] });

    await nats.start();
    await vi.waitFor(
      async () =>
        expect((await bus.publishRequest(sampleRequest({ base: BASE }), "w1")).duplicate).toBe(false),
      { timeout: 15_000, interval: 200 },
    );
    // Told once that the connection is back (a worker then asks whether its requests are still wanted).
    expect(reconnects).toBe(1);
    await following.close();
    const again = await bus.openReplyInbox();
    again.close();
    expect(await bus.liveHeartbeats(BASE)).toEqual([]);
    expect((await readiness.request("/readyz")).status).toBe(200);
  });
});
