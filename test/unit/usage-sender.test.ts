// A worker's usage events wait on disk until the usage stream stored them: a process killed meanwhile
// leaves them there, and the next one on the same spool sends them. Real files, the in-process bus.
import { existsSync, mkdtempSync, readdirSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { InProcessBroker } from "../../bus/in-process.ts";
import type { UsageEvent } from "../../schema/wire.ts";
import { UsageSender } from "../../worker/usage-sender.ts";
import { UsageSpool } from "../../worker/usage-spool.ts";
import { sampleUsage } from "../contract/wire-samples.ts";
import { failUsagePublishes } from "../support/flaky-usage.ts";

const root = mkdtempSync(join(tmpdir(), "luminet-usage-spool-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));
let spools = 0;
const newSpoolDir = () => join(root, `spool-${spools++}`);
const RETRY = { firstMs: 1, maxMs: 4 };

async function meteredBus() {
  const broker = new InProcessBroker();
  const meter = broker.connect();
  const worker = broker.connect();
  const stored: UsageEvent[] = [];
  const metering = await meter.consumeUsage(async (event) => {
    stored.push(event);
  });
  return {
    worker,
    stored,
    close: async () => {
      await metering.close();
      await Promise.all([meter.close(), worker.close()]);
    },
  };
}

const eventFiles = (dir: string) => readdirSync(dir).filter((name) => name.endsWith(".json"));

describe("usage events on a worker's disk until stored", () => {
  it("holds an event on disk while the bus refuses it and removes it once stored", async () => {
    const { worker, stored, close } = await meteredBus();
    let down = true;
    const attempts = failUsagePublishes(worker, () => down);
    const dir = newSpoolDir();
    const sender = new UsageSender(worker, UsageSpool.open(dir), RETRY);
    const sending = sender.send(sampleUsage({ request_id: "req/1: any characters" }));

    await expect.poll(() => attempts()).toBeGreaterThan(3);
    expect(eventFiles(dir)).toHaveLength(1);
    expect(sender.waiting).toBe(1);
    expect(UsageSpool.open(dir).held()).toEqual([
      expect.objectContaining({ request_id: "req/1: any characters" }),
    ]);
    down = false;
    await sending;
    expect(stored.map((e) => e.request_id)).toEqual(["req/1: any characters"]);
    expect(eventFiles(dir)).toEqual([]);
    expect(sender.waiting).toBe(0);
    await close();
  });

  it("sends what an earlier process left on the spool, once each, and removes it", async () => {
    const dir = newSpoolDir();
    // The earlier process: its events were written, never stored, and it died.
    const earlier = UsageSpool.open(dir);
    await earlier.keep(sampleUsage({ request_id: "left-1", output_tokens: 7 }));
    await earlier.keep(sampleUsage({ request_id: "left-2", output_tokens: 9 }));

    const { worker, stored, close } = await meteredBus();
    const sender = new UsageSender(worker, UsageSpool.open(dir), RETRY);
    expect(sender.resendSpooled()).toBe(2);
    expect(sender.waiting).toBe(2);
    await expect.poll(() => eventFiles(dir)).toEqual([]);
    expect(sender.waiting).toBe(0);
    expect(stored.map((e) => [e.request_id, e.output_tokens]).sort()).toEqual([
      ["left-1", 7],
      ["left-2", 9],
    ]);
    expect(new UsageSender(worker, UsageSpool.open(dir), RETRY).resendSpooled()).toBe(0);
    await sender.close();
    await close();
  });

  it("leaves spooled events on disk when closed before the bus took them", async () => {
    const dir = newSpoolDir();
    await UsageSpool.open(dir).keep(sampleUsage({ request_id: "still-down" }));
    const { worker, stored, close } = await meteredBus();
    const attempts = failUsagePublishes(worker, () => true);
    const sender = new UsageSender(worker, UsageSpool.open(dir), RETRY);
    sender.resendSpooled();
    await expect.poll(() => attempts()).toBeGreaterThan(2);
    await sender.close();
    const attemptsAtClose = attempts();
    await new Promise((resolve) => setTimeout(resolve, 30));
    expect(attempts()).toBe(attemptsAtClose);
    expect(stored).toEqual([]);
    expect(
      UsageSpool.open(dir)
        .held()
        .map((e) => e.request_id),
    ).toEqual(["still-down"]);
    await close();
  });

  it("gives up sending a spooled event once closed, leaving it on disk; never one held only in memory", async () => {
    const { worker, stored, close } = await meteredBus();
    let down = true;
    const attempts = failUsagePublishes(worker, () => down);
    const dir = newSpoolDir();
    const spooling = new UsageSender(worker, UsageSpool.open(dir), RETRY);
    const inMemory = new UsageSender(worker, null, RETRY);
    const spooledSend = spooling.send(sampleUsage({ request_id: "on-disk" }));
    const memorySend = inMemory.send(sampleUsage({ request_id: "in-memory" }));
    await expect.poll(() => attempts()).toBeGreaterThan(4);
    await Promise.all([spooling.close(), inMemory.close()]);
    expect(await spooledSend).toBe(false);
    expect(
      UsageSpool.open(dir)
        .held()
        .map((e) => e.request_id),
    ).toEqual(["on-disk"]);
    // The one in memory keeps trying until the bus takes it.
    const atClose = attempts();
    await expect.poll(() => attempts()).toBeGreaterThan(atClose + 2);
    down = false;
    expect(await memorySend).toBe(true);
    expect(stored.map((e) => e.request_id)).toEqual(["in-memory"]);
    await close();
  });

  it("still sends an event that arrives once closed (a drain's last requests), when the bus takes it", async () => {
    const { worker, stored, close } = await meteredBus();
    const dir = newSpoolDir();
    const sender = new UsageSender(worker, UsageSpool.open(dir), RETRY);
    await sender.close();
    expect(await sender.send(sampleUsage({ request_id: "last-of-the-drain" }))).toBe(true);
    expect(stored.map((e) => e.request_id)).toEqual(["last-of-the-drain"]);
    expect(eventFiles(dir)).toEqual([]);
    await close();
  });

  it("moves an unreadable file aside without sending it, and drops abandoned half-written files", async () => {
    const dir = newSpoolDir();
    const spool = UsageSpool.open(dir);
    await spool.keep(sampleUsage({ request_id: "fine" }));
    writeFileSync(join(dir, "0123.json"), '{"request_id": "cut off');
    const abandoned = join(dir, "4567.json.99.writing");
    const recent = join(dir, "89ab.json.98.writing");
    writeFileSync(abandoned, "{");
    writeFileSync(recent, "{");
    const hourAgo = new Date(Date.now() - 3_600_000);
    utimesSync(abandoned, hourAgo, hourAgo);

    const reopened = UsageSpool.open(dir);
    expect(existsSync(abandoned)).toBe(false);
    // Possibly another live process's write in progress.
    expect(existsSync(recent)).toBe(true);
    expect(reopened.held().map((e) => e.request_id)).toEqual(["fine"]);
    expect(existsSync(join(dir, "0123.json.unreadable"))).toBe(true);
    expect(eventFiles(dir)).toHaveLength(1);
  });
});
