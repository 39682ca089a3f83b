// A JetStream consumer deleted under a running meter or worker (by an operator, or with its stream by a
// cleanup), against the real NATS (a namespace per test) and Postgres (PGlite when DATABASE_URL is unset).
// The meter and the worker create it again and carry on, each event billed once; a worker that cannot
// create it again reports not ready and leaves the heartbeat bucket until it can.
import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type JetStreamManager, jetstreamManager, RetentionPolicy } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, afterEach, beforeAll, describe, expect, inject, it, vi } from "vitest";
import type { Bus } from "../../bus/bus.ts";
import { connectJetStreamBus, type JetStreamBusOptions } from "../../bus/jetstream.ts";
import { migrate } from "../../db/migrate.ts";
import { type Db, openDb } from "../../db/open.ts";
import { startMeter } from "../../meter/meter.ts";
import { ANY_WORKER, type Final, greedySampling, WIRE_VERSION } from "../../schema/wire.ts";
import { type LuminetProcess, startLuminetProcess } from "../../scripts/luminet-process.ts";
import { initTinyModel } from "../../scripts/tiny-model.ts";
import {
  orgRows,
  orgTotals,
  registerBase,
  uniqueNamespace,
  usageBacklog,
  usageEvent,
} from "../support/meter-fixtures.ts";

const natsUrl = inject("natsUrl");
const databaseUrl = inject("postgresUrl") || "pglite:memory";
const waitLong = { timeout: 20_000, interval: 100 };

let nc: NatsConnection;
let jsm: JetStreamManager;
const cleanups: Array<() => Promise<void>> = [];

beforeAll(async () => {
  nc = await connect({ servers: natsUrl });
  jsm = await jetstreamManager(nc);
});

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

afterAll(async () => {
  await nc.close();
});

async function busIn(namespace: string, options: Partial<JetStreamBusOptions> = {}): Promise<Bus> {
  const bus = await connectJetStreamBus({ servers: natsUrl, namespace, ...options });
  cleanups.push(() => bus.close());
  return bus;
}

/**
 * Takes a namespace's stream away and puts in its place one of another name over the same subjects, so
 * Luminet cannot create its own again until the blocker is removed (the returned function).
 */
async function blockStream(stream: string, subjects: string): Promise<() => Promise<void>> {
  const blocker = `${stream}_BLOCKER`;
  // nats-server finishes a deletion after answering it: a stream added over the same subjects at once
  // could lose them to that cleanup. The process waits a second before it creates its stream again (if it
  // is quicker, it is deleted again).
  for (let tries = 1; ; tries++) {
    await jsm.streams.delete(stream).catch(() => {});
    await new Promise((resolve) => setTimeout(resolve, 300));
    try {
      await jsm.streams.add({ name: blocker, subjects: [subjects], retention: RetentionPolicy.Workqueue });
      break;
    } catch (error) {
      if (tries === 20) throw error;
    }
  }
  let removed = false;
  const unblock = async () => {
    if (removed) return;
    removed = true;
    // Another test run's teardown may have deleted it already (it deletes the streams made during the run).
    await jsm.streams.delete(blocker).catch(() => {});
  };
  cleanups.push(unblock);
  return unblock;
}

describe(`the meter whose consumer is deleted (${databaseUrl.startsWith("pglite") ? "PGlite" : "Postgres"})`, () => {
  let db: Db;
  let base: string;

  beforeAll(async () => {
    db = await openDb(databaseUrl);
    await migrate(db);
    base = `test/consumer-lost-${randomUUID()}`;
    await registerBase(db, base, 150_000, 600_000);
  });

  afterAll(async () => {
    await db.close();
  });

  async function meterIn(namespace: string, options: Partial<JetStreamBusOptions> = {}) {
    const meter = await startMeter({ bus: await busIn(namespace, options), db, batchSize: 4, flushMs: 20 });
    cleanups.push(() => meter.stop());
  }

  async function sendAndExpectBilled(publisher: Bus, org: string, ids: string[]): Promise<void> {
    for (const id of ids) await publisher.publishUsage(usageEvent({ org, base, request_id: id }));
    await vi.waitFor(
      async () =>
        expect((await orgRows(db, org)).map((r) => r.requestId)).toEqual(expect.arrayContaining(ids)),
      waitLong,
    );
  }

  it("creates it again and bills the events sent afterwards, each once", async () => {
    const namespace = uniqueNamespace();
    const publisher = await busIn(namespace);
    await meterIn(namespace);
    const org = `org-${randomUUID()}`;
    const ids = (from: number, to: number) =>
      Array.from({ length: to - from }, (_, i) => `${org}-${from + i}`);
    await sendAndExpectBilled(publisher, org, ids(0, 6));

    await jsm.consumers.delete(`${namespace}_USAGE`, "meter");
    await sendAndExpectBilled(publisher, org, ids(6, 12));
    // And again: a second deletion is found as the first.
    await jsm.consumers.delete(`${namespace}_USAGE`, "meter");
    await sendAndExpectBilled(publisher, org, ids(12, 18));

    const rows = await orgRows(db, org);
    expect(rows.map((r) => r.requestId).sort()).toEqual(ids(0, 18).sort());
    expect(rows.every((r) => r.costMicros === 27)).toBe(true);
    await vi.waitFor(async () => expect(await usageBacklog(natsUrl, namespace)).toBe(0), waitLong);
    expect((await jsm.consumers.info(`${namespace}_USAGE`, "meter")).config.max_deliver).toBe(-1);
  });

  it("bills once the events it took before the deletion and could not ack", async () => {
    const namespace = uniqueNamespace();
    const publisher = await busIn(namespace);
    // Events wait 1.5 s for their transaction: the consumer is deleted while they are taken, not acked.
    const meter = await startMeter({
      bus: await busIn(namespace),
      db,
      batchSize: 8,
      flushMs: 1_500,
    });
    cleanups.push(() => meter.stop());
    const org = `org-${randomUUID()}`;
    const ids = Array.from({ length: 5 }, (_, i) => `${org}-${i}`);
    for (const id of ids) await publisher.publishUsage(usageEvent({ org, base, request_id: id }));
    await vi.waitFor(
      async () => expect((await jsm.consumers.info(`${namespace}_USAGE`, "meter")).num_ack_pending).toBe(5),
      waitLong,
    );
    await jsm.consumers.delete(`${namespace}_USAGE`, "meter");

    // The consumer created again delivers them again (nothing else was sent): each is written once, and
    // acked; the copies taken before the deletion find their rows there.
    await vi.waitFor(async () => expect(await usageBacklog(natsUrl, namespace)).toBe(0), waitLong);
    const recreated = await jsm.consumers.info(`${namespace}_USAGE`, "meter");
    expect(recreated.delivered.consumer_seq).toBeGreaterThanOrEqual(5);
    await meter.stop();
    expect(await orgTotals(db, org)).toMatchObject({ rows: 5, distinctRequests: 5, costMicros: 5 * 27 });
    expect((await orgRows(db, org)).map((r) => r.requestId)).toEqual(ids);
  });

  it("creates its stream again when the stream was deleted, and bills what comes after", async () => {
    const namespace = uniqueNamespace();
    const publisher = await busIn(namespace);
    await meterIn(namespace);
    const org = `org-${randomUUID()}`;
    await sendAndExpectBilled(publisher, org, [`${org}-before`]);

    await jsm.streams.delete(`${namespace}_USAGE`);
    // The meter creates the stream again (as at its start) with its consumer.
    await vi.waitFor(
      async () => expect((await jsm.consumers.info(`${namespace}_USAGE`, "meter")).name).toBe("meter"),
      waitLong,
    );
    await sendAndExpectBilled(publisher, org, [`${org}-after-1`, `${org}-after-2`]);
    expect((await orgRows(db, org)).map((r) => r.requestId)).toEqual([
      `${org}-after-1`,
      `${org}-after-2`,
      `${org}-before`,
    ]);
  });

  it("says why while it cannot create it again, and bills once it can", async () => {
    const namespace = uniqueNamespace();
    const publisher = await busIn(namespace);
    const errors: Error[] = [];
    await meterIn(namespace, { onError: (error) => errors.push(error) });
    const org = `org-${randomUUID()}`;
    await sendAndExpectBilled(publisher, org, [`${org}-before`]);

    const unblock = await blockStream(`${namespace}_USAGE`, `${namespace}.usage.>`);
    await vi.waitFor(
      () =>
        expect(errors.map((e) => e.message)).toContainEqual(
          expect.stringMatching(/stream .*_USAGE is gone and could not be created again/),
        ),
      waitLong,
    );
    await unblock();
    await vi.waitFor(
      async () => expect((await jsm.streams.info(`${namespace}_USAGE`)).config.name).toBeTruthy(),
      waitLong,
    );
    await sendAndExpectBilled(publisher, org, [`${org}-after`]);
    expect(await orgRows(db, org)).toHaveLength(2);
  });
});

describe("a worker whose pull consumers are deleted", () => {
  const BASE = "tiny/llama";
  /** The default: a heartbeat that leaves sooner left on purpose. */
  const HEARTBEAT_TTL_MS = 5000;
  const namespace = uniqueNamespace();
  let root: string;
  let bus: Bus;
  let worker: LuminetProcess;
  let metricsPort: number;

  beforeAll(async () => {
    root = mkdtempSync(join(tmpdir(), "luminet-consumer-lost-"));
    const tiny = initTinyModel(join(root, "model"), {
      shape: "tiny",
      adapters: 0,
      rank: 4,
      seed: 5,
      endOfText: false,
    });
    bus = await connectJetStreamBus({ servers: natsUrl, namespace, heartbeatTtlMs: HEARTBEAT_TTL_MS });
    worker = await startLuminetProcess({
      args: [
        "worker",
        ...["--model", tiny.dir, "--base", BASE, "--worker-id", "w1", "--namespace", namespace],
        ...["--slots", "2", "--max-rank", "4", "--max-context", "256", "--threads", "1"],
        ...["--blobs", join(root, "blobs"), "--disk-cache", join(root, "cache")],
        ...["--usage-spool", join(root, "spool"), "--metrics-port", "0"],
        ...["--ack-wait-ms", "2000", "--heartbeat-ttl-ms", String(HEARTBEAT_TTL_MS)],
      ],
      env: { NATS_URL: natsUrl, LOG_LEVEL: "info" },
      ready: (entry) => entry.msg === "worker ready",
    });
    metricsPort = worker.readyEntry.metricsPort as number;
  }, 120_000);

  afterAll(async () => {
    await worker?.stop();
    await bus?.close();
    rmSync(root, { recursive: true, force: true });
  });

  /** Sends a request to the worker's own queue (as a gateway routing to it does) or the base's, reads the Final. */
  async function ask(name: string, target = "w1", timeoutMs = 15_000): Promise<Final> {
    const inbox = await bus.openReplyInbox();
    const timer = setTimeout(() => inbox.close(), timeoutMs);
    try {
      await bus.publishRequest(
        {
          v: WIRE_VERSION,
          id: `${namespace}-${name}`,
          org: "org-1",
          api_key_id: "key-1",
          base: BASE,
          adapter: null,
          prompt_token_ids: [1, 40, 60, 70],
          sampling: greedySampling(3),
          reply: inbox.subject,
          created_at: Date.now(),
          deadline: Date.now() + 60_000,
        },
        target,
      );
      for await (const reply of inbox) if (reply.type === "final") return reply;
      throw new Error(`no answer to ${name} within ${timeoutMs} ms`);
    } finally {
      clearTimeout(timer);
      inbox.close();
    }
  }

  const readyz = async () => {
    const response = await fetch(`http://127.0.0.1:${metricsPort}/readyz`);
    return { status: response.status, text: await response.text() };
  };
  const beating = async () => (await bus.liveHeartbeats(BASE)).some((h) => h.worker_id === "w1");

  it("creates them again and serves the requests sent afterwards", async () => {
    await vi.waitFor(async () => expect(await beating()).toBe(true), waitLong);
    expect((await ask("before")).finish_reason).toBe("length");
    const stream = `${namespace}_REQUESTS`;
    const names: string[] = [];
    for await (const consumer of jsm.consumers.list(stream)) names.push(consumer.name);
    expect(names.length).toBe(4);
    for (const name of names) await jsm.consumers.delete(stream, name);

    expect((await ask("after")).finish_reason).toBe("length");
    expect((await readyz()).status).toBe(200);
    expect(worker.logs.some((entry) => String(entry.msg).startsWith("the JetStream consumer was gone"))).toBe(
      true,
    );
    // The shared queue serves again too.
    expect((await ask("any-after", ANY_WORKER)).finish_reason).toBe("length");
  });

  it("reports not ready and stops beating while it cannot create them again, then serves again", async () => {
    const unblock = await blockStream(`${namespace}_REQUESTS`, `${namespace}.infer.>`);
    await vi.waitFor(async () => expect((await readyz()).status).toBe(503), waitLong);
    expect((await readyz()).text).toMatch(
      /not ready: cannot pull requests: the JetStream stream .*_REQUESTS is gone/,
    );
    // Out of the bucket at its next beat (a second), well before the TTL, and no beat put meanwhile.
    await vi.waitFor(async () => expect(await beating()).toBe(false), { timeout: 2_500, interval: 50 });
    await new Promise((resolve) => setTimeout(resolve, 2_000));
    expect(await beating()).toBe(false);

    await unblock();
    await vi.waitFor(async () => expect((await readyz()).status).toBe(200), waitLong);
    await vi.waitFor(async () => expect(await beating()).toBe(true), waitLong);
    expect((await ask("unblocked")).finish_reason).toBe("length");
    expect(worker.logs.map((entry) => entry.msg)).toContain(
      "the worker cannot take requests: heartbeats stop until it can",
    );
  });
});
