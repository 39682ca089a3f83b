// `luminet bench priority` on the tiny model: the probes of both tiers are served through the real worker
// core behind a backlog (on the in-process bus, and on NATS JetStream), and the figures are measured, not
// filled in.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { reportPriorityBench, runPriorityBench } from "../../scripts/bench-priority.ts";
import { initTinyModel } from "../../scripts/tiny-model.ts";

let root: string;
let modelDir: string;

beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), "luminet-bench-priority-"));
  modelDir = initTinyModel(join(root, "model"), { shape: "tiny", adapters: 1, rank: 4, seed: 3 }).dir;
});

afterAll(() => rmSync(root, { recursive: true, force: true }));

/** A run small enough for a test: a batch of 2, 6 requests in flight (3 of them waiting in the bus). */
const SMALL = { maxBatch: 2, backlog: 6, probes: 2, backlogTokens: 8 };

describe("bench priority", () => {
  it("measures both tiers behind a backlog and saves the result", async () => {
    const result = await runPriorityBench({ device: "cpu", modelDir, ...SMALL });
    expect(result).toMatchObject({ max_batch: 2, backlog: 6, probes: 2 });
    for (const ttft of [result.idle_ttft_ms, result.standard_ttft_ms, result.priority_ttft_ms]) {
      expect(ttft.p50).toBeGreaterThan(0);
      expect(ttft.p99).toBeGreaterThanOrEqual(ttft.p50);
    }
    expect(result.backlog_tokens_per_s).toBeGreaterThan(0);
    const dir = join(root, "results");
    reportPriorityBench(result, true, dir);
    expect(JSON.parse(readFileSync(join(dir, "priority.json"), "utf8"))).toEqual(result);
  });

  it("runs over NATS JetStream too, in a namespace of its own that is removed afterwards", async () => {
    const natsUrl = inject("natsUrl");
    const result = await runPriorityBench({ device: "cpu", modelDir, ...SMALL, natsUrl });
    expect(result.setup.path).toBe("luminet worker core on NATS JetStream");
    expect(result.priority_ttft_ms.p50).toBeGreaterThan(0);
    expect(result.backlog_tokens_per_s).toBeGreaterThan(0);
    // Saved beside the in-process run's file, not over it.
    const dir = join(root, "results-nats");
    reportPriorityBench(result, true, dir);
    expect(JSON.parse(readFileSync(join(dir, "priority-nats.json"), "utf8"))).toEqual(result);
    const nc = await connect({ servers: natsUrl });
    try {
      const left: string[] = [];
      for await (const stream of (await jetstreamManager(nc)).streams.list()) {
        if (stream.config.name.includes(`bench_worker_${process.pid}_`)) left.push(stream.config.name);
      }
      expect(left).toEqual([]);
    } finally {
      await nc.close();
    }
  });

  it("refuses a backlog the worker would hold whole", async () => {
    await expect(runPriorityBench({ device: "cpu", modelDir, maxBatch: 4, backlog: 6 })).rejects.toThrow(
      /nothing would wait in the bus/,
    );
  });
});
