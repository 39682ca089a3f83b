// Chaos for billing: 500 usage events go through `luminet meter` processes that are SIGKILLed mid-stream,
// while the meter's own Postgres is stopped like a crash and started again. At the end every event is one
// row — no loss, no duplicate — and the token and cost sums equal what was published. The test runs a
// Postgres server of its own (test/support/private-postgres.ts) so stopping it harms nothing else.
import { type ChildProcess, spawn } from "node:child_process";
import { afterAll, beforeAll, describe, expect, inject, it, vi } from "vitest";
import type { Bus } from "../../bus/bus.ts";
import { connectJetStreamBus } from "../../bus/jetstream.ts";
import { migrate } from "../../db/migrate.ts";
import { type Db, openDb } from "../../db/open.ts";
import { costMicros } from "../../meter/prices.ts";
import type { UsageEvent } from "../../schema/wire.ts";
import {
  orgTotals,
  registerBase,
  uniqueNamespace,
  usageBacklog,
  usageEvent,
} from "../support/meter-fixtures.ts";
import {
  createPrivatePostgres,
  type PrivatePostgres,
  postgresBinaries,
} from "../support/private-postgres.ts";

const natsUrl = inject("natsUrl");
const bin = postgresBinaries();
const EVENTS = 500;
const ORG = "chaos";
const BASES: ReadonlyArray<{ name: string; input: number; output: number }> = [
  { name: "chaos/base-a", input: 150_000, output: 600_000 },
  { name: "chaos/base-b", input: 3_000_000, output: 15_000_000 },
];
const waitLong = { timeout: 30_000, interval: 100 };

/** A `luminet meter` child process and everything it has printed. */
interface MeterProcess {
  child: ChildProcess;
  output(): string;
  exited: Promise<number | null>;
}

describe("billing through meter crashes and a Postgres outage", () => {
  if (!bin) {
    it.skip("needs PostgreSQL's server binaries in /usr/lib/postgresql/<version>/bin (apt-get install postgresql)", () => {});
    return;
  }
  let pg: PrivatePostgres;
  let db: Db;
  let publisher: Bus;
  const namespace = uniqueNamespace();
  const meters: MeterProcess[] = [];

  beforeAll(async () => {
    pg = await createPrivatePostgres(bin);
    pg.start();
    db = await openDb(pg.url);
    await migrate(db);
    for (const base of BASES) await registerBase(db, base.name, base.input, base.output);
    publisher = await connectJetStreamBus({ servers: natsUrl, namespace });
  });

  afterAll(async () => {
    for (const meter of meters) meter.child.kill("SIGKILL");
    await publisher?.close();
    await db?.close();
    pg?.destroy();
  });

  async function startMeterProcess(): Promise<MeterProcess> {
    const child = spawn(
      process.execPath,
      ["bin/luminet.mjs", "meter", "--namespace", namespace, "--ack-wait-ms", "1500", "--flush-ms", "20"],
      {
        env: { ...process.env, NATS_URL: natsUrl, DATABASE_URL: pg.url, LOG_LEVEL: "info" },
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    let output = "";
    child.stdout?.on("data", (chunk: Buffer) => (output += chunk.toString()));
    child.stderr?.on("data", (chunk: Buffer) => (output += chunk.toString()));
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
    const meter = { child, output: () => output, exited };
    meters.push(meter);
    await vi.waitFor(() => {
      if (child.exitCode !== null) throw new Error(`luminet meter exited early:\n${output}`);
      expect(output).toContain("meter started");
    }, waitLong);
    return meter;
  }

  async function kill(meter: MeterProcess): Promise<void> {
    meter.child.kill("SIGKILL");
    await meter.exited;
  }

  const events: UsageEvent[] = Array.from({ length: EVENTS }, (_, i) =>
    usageEvent({
      org: ORG,
      base: BASES[i % 2]!.name,
      request_id: `chaos-${i}`,
      adapter: i % 3 === 0 ? null : `adapter-${i % 7}`,
      input_tokens: 1 + ((i * 37) % 900),
      output_tokens: (i * 11) % 300,
    }),
  );

  async function publish(from: number, to: number): Promise<void> {
    await Promise.all(events.slice(from, to).map((event) => publisher.publishUsage(event)));
  }

  async function rows(): Promise<number> {
    return (await orgTotals(db, ORG)).rows;
  }

  it("ends with one row per event and the published token and cost totals", async () => {
    const first = await startMeterProcess();
    await publish(0, 150);
    await vi.waitFor(async () => expect(await rows()).toBeGreaterThanOrEqual(50), waitLong);
    await kill(first);

    // Published while no meter runs: they wait in JetStream, with whatever the killed meter left unacked.
    await publish(150, 300);
    const second = await startMeterProcess();
    await vi.waitFor(async () => expect(await rows()).toBeGreaterThanOrEqual(200), waitLong);
    pg.stop();

    // Published while Postgres is down, plus retries of events already sent (a worker republishing).
    await publish(300, EVENTS);
    await publish(0, 50);
    await vi.waitFor(() => expect(second.output()).toContain("could not write"), waitLong);
    await kill(second);

    pg.start();
    const third = await startMeterProcess();
    await vi.waitFor(async () => expect(await rows()).toBe(EVENTS), waitLong);
    await vi.waitFor(async () => expect(await usageBacklog(natsUrl, namespace)).toBe(0), waitLong);

    const priceOf = new Map(BASES.map((b) => [b.name, b]));
    const expected = events.reduce(
      (sum, e) => {
        const base = priceOf.get(e.base)!;
        return {
          inputTokens: sum.inputTokens + e.input_tokens,
          outputTokens: sum.outputTokens + e.output_tokens,
          costMicros:
            sum.costMicros +
            costMicros(
              { inputPriceMicrosPerMillion: base.input, outputPriceMicrosPerMillion: base.output },
              { inputTokens: e.input_tokens, outputTokens: e.output_tokens },
            ),
        };
      },
      { inputTokens: 0, outputTokens: 0, costMicros: 0 },
    );
    expect(await orgTotals(db, ORG)).toEqual({ rows: EVENTS, distinctRequests: EVENTS, ...expected });

    // SIGTERM drains and exits cleanly.
    third.child.kill("SIGTERM");
    expect(await third.exited).toBe(0);
    expect(third.output()).toContain("meter stopped");
  });
});
