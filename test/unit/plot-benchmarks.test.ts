// The benchmark plots read back: every measured point and bar is there with its numbers, placed where its
// value says, and the files are written only for results that exist.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import type { EngineBenchResult } from "../../scripts/bench-engine.ts";
import type { FleetBenchResult, FleetPhase } from "../../scripts/bench-fleet.ts";
import { engineThroughputSvg, fleetRoutingSvg, writeBenchmarkPlots } from "../../scripts/plot-benchmarks.ts";

function engineResult(ratios: number[]): EngineBenchResult {
  const us = [1, 4, 16, 64];
  return {
    machine: "test",
    device: "cpu",
    shape: "bench-1b",
    base_tokens_per_s: 1000,
    results: ratios.map((ratio, i) => ({
      U: us[i]!,
      tokens_per_s: Math.round(1000 * ratio),
      ratio,
      bound: 0.99,
      efficiency: ratio / 0.99,
      step_ms_p50: 10,
      added_ms_p50: 1,
    })),
    roofline: { flops_per_s: 1, bytes_per_s: 1, dominant: "compute" },
    setup: {
      layers: 2,
      dtype: "float32",
      formulation: "segments",
      sequences: 64,
      context: 128,
      timed_steps: 16,
      rank: 16,
    },
  };
}

function fleetPhase(arrivals: FleetPhase["arrivals"]): FleetPhase {
  return {
    requests: 100,
    routes: { resident: 0, ram: 0, disk: 0, cold: 0, fallback: 0 },
    arrivals,
    in_slot_share: 0,
    in_memory_share: 0,
    loads_per_1000: 100,
    loads_per_1000_by_tier: { ram: 50, disk: 0, blob: 50 },
    tokens_per_s: 1,
    ttft_ms: { p50: 1, p99: 2 },
    seconds: 1,
  };
}

const fleet: FleetBenchResult = {
  machine: "test",
  setup: {
    workers: 4,
    slots_per_worker: 16,
    adapters: 200,
    zipf_s: 1,
    requests: 100,
    concurrency: 4,
    prompt_tokens: 16,
    max_tokens: 8,
    model: "tiny",
    path: "test",
  },
  residency: {
    router: "residency",
    cold: fleetPhase({ slot: 50, ram: 20, disk: 0, loading: 10, none: 20 }),
    warm: fleetPhase({ slot: 60, ram: 30, disk: 0, loading: 0, none: 10 }),
  },
  baseline: {
    router: "least-loaded",
    cold: fleetPhase({ slot: 20, ram: 20, disk: 5, loading: 5, none: 50 }),
    warm: fleetPhase({ slot: 25, ram: 25, disk: 0, loading: 0, none: 50 }),
  },
  load_ratio: 0.5,
  blob_load_ratio: 0.4,
};

/** The attributes of every element carrying `class="<cls>"`. */
function elements(svg: string, cls: string): Record<string, string>[] {
  return [...svg.matchAll(new RegExp(`<\\w+ class="${cls}"([^>]*)>`, "g"))].map((m) =>
    Object.fromEntries([...m[1]!.matchAll(/([\w-]+)="([^"]*)"/g)].map((a) => [a[1]!, a[2]!])),
  );
}

const root = mkdtempSync(join(tmpdir(), "luminet-plots-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe("benchmark plots", () => {
  it("plots each engine result as a line of points, higher ratios drawn higher", () => {
    const svg = engineThroughputSvg([
      { name: "cpu", result: engineResult([0.9, 0.8, 0.7, 0.5]) },
      { name: "gpu", result: engineResult([0.95, 0.6, 0.3, 0.1]) },
    ]);
    const points = elements(svg, "point");
    expect(points).toHaveLength(8);
    expect(points.filter((p) => p["data-series"] === "gpu").map((p) => Number(p["data-ratio"]))).toEqual([
      0.95, 0.6, 0.3, 0.1,
    ]);
    const cpu = points.filter((p) => p["data-series"] === "cpu");
    const ys = cpu.map((p) => Number(p.cy));
    expect([...ys].sort((a, b) => a - b)).toEqual(ys); // falling ratios: y grows down the page
    const xs = cpu.map((p) => Number(p.cx));
    // U on a log scale: 1 → 4 → 16 → 64 are equal steps.
    expect(xs[1]! - xs[0]!).toBeCloseTo(xs[3]! - xs[2]!, 0);
    expect(elements(svg, "bound")).toHaveLength(2);
    expect(svg.startsWith("<svg xmlns")).toBe(true);
  });

  it("draws where each router's requests found their adapters, per phase, as shares of a whole bar", () => {
    const svg = fleetRoutingSvg(fleet);
    const bars = elements(svg, "bar");
    const bar = (router: string, phase: string) =>
      bars.filter((b) => b["data-router"] === router && b["data-phase"] === phase);
    expect(bar("residency", "warm").map((b) => [b["data-tier"], Number(b["data-share"])])).toEqual([
      ["slot", 0.6],
      ["ram", 0.3],
      ["none", 0.1],
    ]);
    expect(bar("least-loaded", "cold").map((b) => b["data-tier"])).toEqual([
      "slot",
      "ram",
      "disk",
      "loading",
      "none",
    ]);
    const width = (bs: typeof bars) => bs.reduce((sum, b) => sum + Number(b.width), 0);
    expect(width(bar("residency", "warm"))).toBeCloseTo(width(bar("least-loaded", "cold")), 0);
    expect(elements(svg, "aim")).toHaveLength(1);
  });

  it("writes only the plots whose results exist", () => {
    const out = join(root, "plots");
    expect(writeBenchmarkPlots(join(root, "missing"), out)).toEqual([]);
    const dir = mkdtempSync(join(root, "results-"));
    writeFileSync(join(dir, "fleet.json"), JSON.stringify(fleet));
    expect(writeBenchmarkPlots(dir, out)).toEqual([join(out, "fleet-routing.svg")]);
    writeFileSync(join(dir, "engine-webgpu.json"), JSON.stringify(engineResult([0.9, 0.9, 0.8, 0.7])));
    const written = writeBenchmarkPlots(dir, out);
    expect(written).toContain(join(out, "engine-throughput.svg"));
    const svg = readFileSync(join(out, "engine-throughput.svg"), "utf8");
    expect(elements(svg, "point").map((p) => p["data-series"])).toEqual(Array(4).fill("WebGPU (H200)"));
  });
});
