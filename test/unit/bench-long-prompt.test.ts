// `luminet bench long-prompt` on the tiny model: each budget's run completes every stream and the long
// request through the real worker core, and its figures are measured, not filled in.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { reportLongPromptBench, runLongPromptBench } from "../../scripts/bench-long-prompt.ts";
import { initTinyModel } from "../../scripts/tiny-model.ts";

let root: string;
let modelDir: string;

beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), "luminet-bench-long-prompt-"));
  modelDir = initTinyModel(join(root, "model"), { shape: "tiny", adapters: 1, rank: 4, seed: 3 }).dir;
});

afterAll(() => rmSync(root, { recursive: true, force: true }));

describe("bench long-prompt", () => {
  it("measures the streams around a long prompt for each step budget and saves the result", async () => {
    const result = await runLongPromptBench({
      device: "cpu",
      modelDir,
      promptTokens: 300,
      streams: 3,
      stepTokens: [303, 40],
    });
    expect(result.prompt_tokens).toBe(300);
    expect(result.results.map((r) => r.step_tokens)).toEqual([303, 40]);
    for (const run of result.results) {
      expect(run.long_ttft_ms).toBeGreaterThan(0);
      expect(run.stream_gap_p50_ms).toBeGreaterThan(0);
      expect(run.stream_max_gap_ms).toBeGreaterThanOrEqual(0);
    }
    const dir = join(root, "results");
    reportLongPromptBench(result, true, dir);
    expect(JSON.parse(readFileSync(join(dir, "long-prompt.json"), "utf8"))).toEqual(result);
  });

  it("refuses a step budget that cannot hold the streams", async () => {
    await expect(
      runLongPromptBench({ device: "cpu", modelDir, promptTokens: 100, streams: 8, stepTokens: [8] }),
    ).rejects.toThrow("each step token budget must be an integer above --streams (8), got 8");
  });
});
