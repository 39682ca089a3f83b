// `luminet bench e2e` at its smallest: the tiny model with 2 layers, 2 adapters, 4 connections, a few
// tokens, on the real NATS and Postgres of the run. It checks what the benchmark reports and that billing
// matched every response, not how fast anything was.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, inject, it } from "vitest";
import { type E2eBenchResult, reportE2eBench, runE2eBench } from "../../scripts/bench-e2e.ts";

const postgresUrl = inject("postgresUrl");

describe.skipIf(!postgresUrl)("luminet bench e2e (needs DATABASE_URL)", () => {
  it("streams the mix through gateway, worker and meter, runs it on the engine alone, and bills every response exactly", async () => {
    const result = await runE2eBench({
      shape: "tiny",
      layers: 2,
      adapters: 2,
      connections: 4,
      requests: 8,
      maxTokens: 4,
      rounds: 2,
      threads: 1,
      natsUrl: inject("natsUrl"),
      databaseUrl: postgresUrl,
    });

    expect(result.setup).toMatchObject({
      shape: "tiny",
      layers: 2,
      adapters: 2,
      connections: 4,
      requests: 8,
      rounds: 2,
      threads: 1,
    });
    for (const side of [result.e2e, result.engine]) {
      expect(side.passes).toHaveLength(2);
      for (const pass of side.passes) {
        expect(pass.requests).toBe(8);
        expect(pass.tokens).toBeGreaterThan(0);
        expect(pass.tokens).toBeLessThanOrEqual(8 * 4);
        expect(pass.tokens_per_s).toBeGreaterThan(0);
      }
    }
    expect(result.round_ratios).toEqual(
      result.e2e.passes.map((p, i) =>
        expect.closeTo(p.tokens_per_s / result.engine.passes[i]!.tokens_per_s, 2),
      ),
    );
    expect(result.ratio).toBeCloseTo((result.round_ratios[0]! + result.round_ratios[1]!) / 2, 2);
    // Greedy on the same prompts and adapters: every pass, through the stack or not, generates the same.
    expect(result.same_completion_tokens).toBe(true);
    expect(result.e2e.step_seconds).toBeGreaterThan(0);
    expect(result.e2e.cpu_seconds.client).toBeGreaterThan(0);
    expect(result.engine.cpu_seconds).toBeGreaterThan(0);
    // Two warm-up requests (one per adapter) and two passes of eight, each billed exactly as its usage said.
    expect(result.billing).toMatchObject({
      responses: 18,
      billed_rows: 18,
      matched: 18,
      mismatches: [],
      ok: true,
    });

    const resultsDir = mkdtempSync(join(tmpdir(), "luminet-bench-e2e-results-"));
    try {
      const write = process.stdout.write;
      process.stdout.write = () => true;
      try {
        reportE2eBench(result, true, resultsDir);
      } finally {
        process.stdout.write = write;
      }
      const saved = JSON.parse(readFileSync(join(resultsDir, "e2e.json"), "utf8")) as E2eBenchResult;
      expect(saved).toEqual(result);
    } finally {
      rmSync(resultsDir, { recursive: true, force: true });
    }
  }, 300_000);
});
