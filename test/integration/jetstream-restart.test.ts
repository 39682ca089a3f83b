// What JetStream stores outlives the server: this test runs its own nats-server on a free port and a
// fresh store directory, fills the bus, stops the server, starts it again on the same port and store,
// and reads everything back through a new connection. Also: a server the bus cannot use gives one clear
// error.
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import type { Bus } from "../../bus/bus.ts";
import { connectJetStreamBus } from "../../bus/jetstream.ts";
import { type AdapterControl, ANY_WORKER, type UsageEvent } from "../../schema/wire.ts";
import { sampleControl, sampleRequest, sampleUsage } from "../contract/wire-samples.ts";

const BASE = "hf:Qwen/Qwen2.5-0.5B";

function natsServerBinary(): string {
  for (const candidate of ["nats-server", "/usr/sbin/nats-server", "/usr/local/bin/nats-server"]) {
    if (spawnSync(candidate, ["--version"]).status === 0) return candidate;
  }
  throw new Error("this test needs nats-server on PATH (Debian: apt-get install nats-server)");
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => (typeof address === "object" && address ? resolve(address.port) : reject()));
    });
  });
}

/** Starts nats-server (with JetStream when given a store) and resolves once it reports ready. */
function startNats(port: number, storeDir?: string): Promise<ChildProcess> {
  const jetStream = storeDir === undefined ? [] : ["-js", "-sd", storeDir];
  const child = spawn(natsServerBinary(), ["-a", "127.0.0.1", "-p", String(port), ...jetStream], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  return new Promise((resolve, reject) => {
    let log = "";
    child.stderr?.on("data", (chunk: Buffer) => {
      log += chunk.toString();
      if (log.includes("Server is ready")) resolve(child);
    });
    child.once("exit", (code) =>
      reject(new Error(`nats-server exited with ${code} before it was ready:\n${log}`)),
    );
  });
}

function stopNats(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null) return resolve();
    child.once("exit", () => resolve());
    child.kill("SIGTERM");
  });
}

describe("JetStream bus across a nats-server restart", () => {
  const storeDir = mkdtempSync(join(tmpdir(), "luminet-restart-"));
  let server: ChildProcess | undefined;
  const buses: Bus[] = [];

  afterAll(async () => {
    await Promise.all(buses.map((bus) => bus.close().catch(() => {})));
    if (server) await stopNats(server);
    rmSync(storeDir, { recursive: true, force: true });
  });

  it("keeps queued and unacked requests, usage events and control state", async () => {
    const port = await freePort();
    const servers = `nats://127.0.0.1:${port}`;
    const options = { servers, ackWaitMs: 500 };
    server = await startNats(port, storeDir);

    const before = await connectJetStreamBus(options);
    buses.push(before);
    await before.publishRequest(sampleRequest({ id: "queued", base: BASE }), ANY_WORKER);
    await before.publishRequest(sampleRequest({ id: "in-flight", base: BASE }), "w1");
    const puller = await before.pullRequests({ base: BASE, workerId: "w1", shared: false });
    expect((await puller.next())?.message.id).toBe("in-flight");
    const usage = sampleUsage({ request_id: "billed-once", base: BASE });
    await before.publishUsage(usage);
    const pin = sampleControl({ base: BASE, adapter: "acme/a", kind: "pin", pinned: true });
    await before.publishControl(pin);
    await before.close();

    await stopNats(server);
    server = await startNats(port, storeDir);

    const after = await connectJetStreamBus(options);
    buses.push(after);
    const worker = await after.pullRequests({ base: BASE, workerId: "w1" });
    const ids: string[] = [];
    for (let i = 0; i < 2; i++) {
      const delivery = await worker.next();
      if (!delivery) break;
      ids.push(delivery.message.id);
      await delivery.ack();
    }
    expect(ids.sort()).toEqual(["in-flight", "queued"]);

    const billed = new Promise<UsageEvent>((resolve) => {
      void after.consumeUsage(async (event) => resolve(event));
    });
    expect(await billed).toEqual(usage);

    const control = new Promise<AdapterControl>((resolve) => {
      void after.onControl(BASE, resolve);
    });
    expect(await control).toEqual(pin);
  });
});

describe("JetStream bus connection", () => {
  it("names the address when nothing answers there", async () => {
    const port = await freePort();
    await expect(connectJetStreamBus({ servers: `nats://127.0.0.1:${port}` })).rejects.toThrow(
      `cannot reach NATS at nats://127.0.0.1:${port}`,
    );
  });

  it("takes its stream replicas from LUMINET_STREAM_REPLICAS, refusing a bad value before connecting", async () => {
    const port = await freePort();
    const storeDir = mkdtempSync(join(tmpdir(), "luminet-replicas-"));
    const single = await startNats(port, storeDir);
    const saved = process.env.LUMINET_STREAM_REPLICAS;
    try {
      const servers = `nats://127.0.0.1:${port}`;
      for (const bad of ["0", "2.5", "six"]) {
        process.env.LUMINET_STREAM_REPLICAS = bad;
        await expect(connectJetStreamBus({ servers })).rejects.toThrow(
          `LUMINET_STREAM_REPLICAS must be an integer from 1 to 5, got "${bad}"`,
        );
      }
      // A lone server cannot hold three copies: the setting reached the streams.
      process.env.LUMINET_STREAM_REPLICAS = "3";
      await expect(connectJetStreamBus({ servers })).rejects.toThrow(/cannot set up Luminet's streams/);
      process.env.LUMINET_STREAM_REPLICAS = "1";
      await (await connectJetStreamBus({ servers })).close();
    } finally {
      if (saved === undefined) delete process.env.LUMINET_STREAM_REPLICAS;
      else process.env.LUMINET_STREAM_REPLICAS = saved;
      await stopNats(single);
      rmSync(storeDir, { recursive: true, force: true });
    }
  });

  it("says to enable JetStream when the server runs without it", async () => {
    const port = await freePort();
    const plain = await startNats(port);
    try {
      await expect(connectJetStreamBus({ servers: `nats://127.0.0.1:${port}` })).rejects.toThrow(
        /does not serve JetStream \(start nats-server with -js\)/,
      );
    } finally {
      await stopNats(plain);
    }
  });
});
