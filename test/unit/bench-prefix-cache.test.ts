// `luminet bench prefix-cache` on the tiny model: both modes serve every request through the real worker
// core, and the figures are measured, not filled in.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { reportPrefixCacheBench, runPrefixCacheBench } from "../../scripts/bench-prefix-cache.ts";
import { initTinyModel } from "../../scripts/tiny-model.ts";

let root: string;
let modelDir: string;

beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), "luminet-bench-prefix-cache-"));
  modelDir = initTinyModel(join(root, "model"), { shape: "tiny", adapters: 1, rank: 4, seed: 3 }).dir;
});

afterAll(() => rmSync(root, { recursive: true, force: true }));

describe("bench prefix-cache", () => {
  it("times requests sharing a prefix with the cache off and on, one at a time and at once, and saves the result", async () => {
    const result = await runPrefixCacheBench({
      device: "cpu",
      modelDir,
      systemTokens: 96,
      tailTokens: 8,
      requests: 3,
      burst: 3,
    });
    expect(result.results.map((r) => r.prefix_cache_bytes)).toEqual([0, 512 * 2 ** 20]);
    for (const run of result.results) {
      expect(run.first_ttft_ms).toBeGreaterThan(0);
      expect(run.ttft_p50_ms).toBeGreaterThan(0);
      expect(run.ttft_p90_ms).toBeGreaterThanOrEqual(run.ttft_p50_ms);
    }
    expect(result.speedup_p50).toBeGreaterThan(0);
    // The burst: off, every prompt is prefilled whole; on, the later two take the shared 96 tokens (six
    // blocks) from the first one's cache.
    expect(result.burst.results.map((r) => [r.prefix_cache_bytes, r.cached_prompt_tokens])).toEqual([
      [0, 0],
      [512 * 2 ** 20, 2 * 96],
    ]);
    for (const run of result.burst.results) {
      expect(run.last_ttft_ms).toBeGreaterThanOrEqual(run.ttft_p50_ms);
      expect(run.ttft_p50_ms).toBeGreaterThan(0);
    }
    const dir = join(root, "results");
    reportPrefixCacheBench(result, true, dir);
    expect(JSON.parse(readFileSync(join(dir, "prefix-cache.json"), "utf8"))).toEqual(result);
  });
});
