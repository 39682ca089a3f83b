// `luminet bench plots`: the SVG plots docs/BENCHMARKS.md shows, drawn from bench/results/*.json — the
// engine's throughput against the number of distinct adapters in a batch (one line per result file, next
// to its roofline bound) and the fleet's routing outcomes, residency-aware router vs the baseline.
// Standalone SVG with inline styles, so they render on GitHub and in any browser; every point and bar
// carries its numbers in data-* attributes and a <title>, which is how tests read a plot back.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { niceCeiling } from "../gateway/dashboard/charts.tsx";
import type { Whereabouts } from "../worker/adapters/adapter-manager.ts";
import type { EngineBenchResult } from "./bench-engine.ts";
import type { FleetBenchResult, FleetPhase, FleetRun } from "./bench-fleet.ts";

/** One engine result file, named for the legend. */
export interface EngineCurve {
  name: string;
  result: EngineBenchResult;
}

const WIDTH = 720;
const HEIGHT = 360;
const PLOT = { left: 64, right: 180, top: 36, bottom: 48 };
const COLORS = ["#2563eb", "#db2777", "#059669", "#d97706", "#7c3aed"];
const FONT = 'font-family="system-ui, sans-serif" font-size="12"';

function escapeXml(text: string): string {
  return text.replace(/[<>&"]/g, (c) => ({ "<": "&lt;", ">": "&gt;", "&": "&amp;", '"': "&quot;" })[c]!);
}

function svg(title: string, body: string[]): string {
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${HEIGHT}" viewBox="0 0 ${WIDTH} ${HEIGHT}" ${FONT}>`,
    `<title>${escapeXml(title)}</title>`,
    `<rect width="${WIDTH}" height="${HEIGHT}" fill="#ffffff"/>`,
    `<text x="${PLOT.left}" y="22" font-size="14" font-weight="600">${escapeXml(title)}</text>`,
    ...body,
    "</svg>",
    "",
  ].join("\n");
}

const plotWidth = WIDTH - PLOT.left - PLOT.right;
const plotHeight = HEIGHT - PLOT.top - PLOT.bottom;
const round = (n: number) => Math.round(n * 10) / 10;

/** Horizontal grid lines and labels of a 0..max value axis. */
function valueAxis(max: number, format: (v: number) => string): string[] {
  const lines: string[] = [];
  for (let i = 0; i <= 4; i++) {
    const value = (max * i) / 4;
    const y = round(PLOT.top + plotHeight - (plotHeight * i) / 4);
    lines.push(
      `<line x1="${PLOT.left}" x2="${PLOT.left + plotWidth}" y1="${y}" y2="${y}" stroke="#e5e7eb"/>`,
      `<text x="${PLOT.left - 8}" y="${y + 4}" text-anchor="end" fill="#4b5563">${format(value)}</text>`,
    );
  }
  return lines;
}

/**
 * Mixed-adapter tokens/s as a share of base-only tokens/s against U (log scale), one solid line per
 * result and its roofline bound dashed: the gap between the two is the engine's inefficiency.
 */
export function engineThroughputSvg(curves: EngineCurve[]): string {
  const us = [...new Set(curves.flatMap((c) => c.result.results.map((r) => r.U)))].sort((a, b) => a - b);
  if (us.length === 0) throw new Error("no engine results to plot");
  const maxRatio = niceCeiling(Math.max(1, ...curves.flatMap((c) => c.result.results.map((r) => r.ratio))));
  const logMin = Math.log2(us[0]!);
  const logSpan = Math.max(1, Math.log2(us.at(-1)!) - logMin);
  const x = (u: number) => round(PLOT.left + (plotWidth * (Math.log2(u) - logMin)) / logSpan);
  const y = (ratio: number) => round(PLOT.top + plotHeight - (plotHeight * ratio) / maxRatio);

  const body = valueAxis(maxRatio, (v) => v.toFixed(2));
  for (const u of us) {
    body.push(
      `<text x="${x(u)}" y="${PLOT.top + plotHeight + 18}" text-anchor="middle" fill="#4b5563">${u}</text>`,
    );
  }
  body.push(
    `<text x="${PLOT.left + plotWidth / 2}" y="${HEIGHT - 8}" text-anchor="middle">distinct adapters in a 64-sequence batch (U)</text>`,
    `<text transform="translate(16 ${PLOT.top + plotHeight / 2}) rotate(-90)" text-anchor="middle">tokens/s ÷ base-only tokens/s</text>`,
  );
  for (const [i, { name, result }] of curves.entries()) {
    const color = COLORS[i % COLORS.length]!;
    const rows = [...result.results].sort((a, b) => a.U - b.U);
    const measured = rows.map((r) => `${x(r.U)},${y(r.ratio)}`).join(" ");
    const bound = rows.map((r) => `${x(r.U)},${y(r.bound)}`).join(" ");
    body.push(
      `<polyline class="bound" points="${bound}" fill="none" stroke="${color}" stroke-dasharray="4 4" opacity="0.6"/>`,
      `<polyline class="measured" points="${measured}" fill="none" stroke="${color}" stroke-width="2"/>`,
    );
    for (const r of rows) {
      const tip = `${name}, U = ${r.U}: ${r.tokens_per_s} tokens/s (base ${result.base_tokens_per_s}), ratio ${r.ratio}, bound ${r.bound}`;
      body.push(
        `<circle class="point" cx="${x(r.U)}" cy="${y(r.ratio)}" r="4" fill="${color}" data-series="${escapeXml(name)}" data-u="${r.U}" data-ratio="${r.ratio}" data-tokens-per-s="${r.tokens_per_s}"><title>${escapeXml(tip)}</title></circle>`,
      );
    }
    const legendY = PLOT.top + 16 + i * 36;
    const legendX = PLOT.left + plotWidth + 16;
    body.push(
      `<line x1="${legendX}" x2="${legendX + 20}" y1="${legendY}" y2="${legendY}" stroke="${color}" stroke-width="2"/>`,
      `<text x="${legendX + 26}" y="${legendY + 4}">${escapeXml(name)}</text>`,
      `<text x="${legendX + 26}" y="${legendY + 18}" fill="#4b5563">base ${result.base_tokens_per_s} tok/s</text>`,
    );
  }
  const noteY = PLOT.top + 16 + curves.length * 36;
  body.push(
    `<text x="${PLOT.left + plotWidth + 16}" y="${noteY}" fill="#4b5563">dashed: roofline bound</text>`,
  );
  return svg("Engine: mixed-adapter throughput vs distinct adapters", body);
}

const WHEREABOUTS: { tier: Whereabouts; label: string; color: string }[] = [
  { tier: "slot", label: "in a slot", color: "#059669" },
  { tier: "ram", label: "in RAM", color: "#84cc16" },
  { tier: "disk", label: "on disk", color: "#f59e0b" },
  { tier: "loading", label: "loading", color: "#a78bfa" },
  { tier: "none", label: "blob store", color: "#dc2626" },
];

/**
 * One stacked horizontal bar per router and phase: the share of requests by where their adapter was on the
 * worker they reached (the workers' own count).
 */
export function fleetRoutingSvg(fleet: FleetBenchResult, aimResidentShare = 0.95): string {
  const bars: { label: string; router: FleetRun["router"]; phase: "cold" | "warm"; run: FleetPhase }[] = [];
  for (const [name, run] of [
    ["residency-aware", fleet.residency],
    ["least-loaded", fleet.baseline],
  ] as const) {
    for (const phase of ["cold", "warm"] as const) {
      bars.push({ label: `${name}, ${phase}`, router: run.router, phase, run: run[phase] });
    }
  }
  const barHeight = 40;
  const gap = 18;
  const span = bars.length * (barHeight + gap);
  const left = PLOT.left + 130;
  const width = WIDTH - left - PLOT.right;
  const body: string[] = [];
  for (let i = 0; i <= 4; i++) {
    const xi = round(left + (width * i) / 4);
    body.push(
      `<line x1="${xi}" x2="${xi}" y1="${PLOT.top}" y2="${PLOT.top + span}" stroke="#e5e7eb"/>`,
      `<text x="${xi}" y="${PLOT.top + span + 16}" text-anchor="middle" fill="#4b5563">${i * 25} %</text>`,
    );
  }
  for (const [i, { label, router, phase, run }] of bars.entries()) {
    const top = PLOT.top + 8 + i * (barHeight + gap);
    const total = Object.values(run.arrivals).reduce((a, b) => a + b, 0);
    body.push(`<text x="${left - 8}" y="${top + barHeight / 2 + 4}" text-anchor="end">${label}</text>`);
    let at = 0;
    for (const { tier, color } of WHEREABOUTS) {
      const count = run.arrivals[tier] ?? 0;
      if (count === 0 || total === 0) continue;
      const share = count / total;
      const tip = `${label}: ${tier} ${count} of ${total} (${(100 * share).toFixed(1)} %)`;
      body.push(
        `<rect class="bar" x="${round(left + width * at)}" y="${top}" width="${round(width * share)}" height="${barHeight}" fill="${color}" data-router="${router}" data-phase="${phase}" data-tier="${tier}" data-share="${share.toFixed(4)}"><title>${escapeXml(tip)}</title></rect>`,
      );
      at += share;
    }
    body.push(
      `<text x="${left + width + 8}" y="${top + barHeight / 2 + 4}">${run.loads_per_1000} loads / 1k</text>`,
    );
  }
  const aimX = round(left + width * aimResidentShare);
  body.push(
    `<line class="aim" x1="${aimX}" x2="${aimX}" y1="${PLOT.top}" y2="${PLOT.top + span}" stroke="#111827" stroke-dasharray="5 3"/>`,
    `<text x="${aimX}" y="${PLOT.top - 4}" text-anchor="middle" fill="#111827">aim: ${aimResidentShare * 100} % resident</text>`,
  );
  const legendY = PLOT.top + span + 44;
  for (const [i, { label, color }] of WHEREABOUTS.entries()) {
    const lx = left + i * 110;
    body.push(
      `<rect x="${lx}" y="${legendY - 10}" width="12" height="12" fill="${color}"/>`,
      `<text x="${lx + 18}" y="${legendY}">${label}</text>`,
    );
  }
  const { workers, slots_per_worker, adapters, requests } = fleet.setup;
  body.push(
    `<text x="${left}" y="${legendY + 28}" fill="#4b5563">${workers} workers × ${slots_per_worker} slots, ${adapters} adapters, Zipf(${fleet.setup.zipf_s}), ${requests} requests per phase</text>`,
  );
  return svg("Fleet routing: where each request's adapter was on its worker", body);
}

/** The engine result files plotted, in legend order, with their names. */
const ENGINE_FILES = [
  { file: "engine-cpu.json", name: "CPU, segment views" },
  { file: "engine-cpu-masked.json", name: "CPU, masked rows" },
  { file: "engine-webgpu.json", name: "WebGPU (H200)" },
];

/** Writes every plot whose results exist; returns the files written. */
export function writeBenchmarkPlots(resultsDir = "bench/results", outDir = "docs/plots"): string[] {
  const read = <T>(file: string): T | null => {
    const path = join(resultsDir, file);
    return existsSync(path) ? (JSON.parse(readFileSync(path, "utf8")) as T) : null;
  };
  mkdirSync(outDir, { recursive: true });
  const written: string[] = [];
  const curves = ENGINE_FILES.flatMap(({ file, name }) => {
    const result = read<EngineBenchResult>(file);
    return result ? [{ name, result }] : [];
  });
  if (curves.length > 0) {
    const path = join(outDir, "engine-throughput.svg");
    writeFileSync(path, engineThroughputSvg(curves));
    written.push(path);
  }
  const fleet = read<FleetBenchResult>("fleet.json");
  if (fleet) {
    const path = join(outDir, "fleet-routing.svg");
    writeFileSync(path, fleetRoutingSvg(fleet));
    written.push(path);
  }
  return written;
}
