// `luminet bench batch-load` on the tiny model: the three phases complete through the real worker core,
// and its figures are measured, not filled in.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { reportBatchLoadBench, runBatchLoadBench } from "../../scripts/bench-batch-load.ts";
import { initTinyModel } from "../../scripts/tiny-model.ts";

let root: string;
let modelDir: string;

beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), "luminet-bench-batch-load-"));
  modelDir = initTinyModel(join(root, "model"), { shape: "tiny", adapters: 1, rank: 4, seed: 3 }).dir;
});

afterAll(() => rmSync(root, { recursive: true, force: true }));

describe("bench batch-load", () => {
  it("measures live requests idle and beside a full batch of batch lines, and saves the result", async () => {
    const result = await runBatchLoadBench({ device: "cpu", modelDir, maxBatch: 4, live: 3, lineTokens: 12 });
    expect(result.max_batch).toBe(4);
    expect(result.live_requests).toBe(3);
    expect(result.idle_ttft_ms.p50).toBeGreaterThan(0);
    expect(result.loaded_ttft_ms.p50).toBeGreaterThan(0);
    expect(result.loaded_ttft_ms.p99).toBeGreaterThanOrEqual(result.loaded_ttft_ms.p50);
    expect(result.batch_tokens_per_s_with_live).toBeGreaterThan(0);
    expect(result.batch_tokens_per_s_alone).toBeGreaterThan(0);
    expect(result.live_phase_s).toBeGreaterThan(0);
    expect(Number.isInteger(result.preemptions)).toBe(true);
    const dir = join(root, "results");
    reportBatchLoadBench(result, true, dir);
    expect(JSON.parse(readFileSync(join(dir, "batch-load.json"), "utf8"))).toEqual(result);
  });
});
