// `luminet bench structured`: every kind of constraint is compiled and masked over the bench vocabulary,
// each walk closes its output within its budget, and the figures are measured, not filled in.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import {
  reportStructuredBench,
  runStructuredBench,
  STRUCTURED_CASES,
} from "../../scripts/bench-structured.ts";

const root = mkdtempSync(join(tmpdir(), "luminet-bench-structured-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe("bench structured", () => {
  it("masks every case's walks, each closing its output within its budget, and saves the result", () => {
    const result = runStructuredBench({ walks: 2, steps: 48 });
    expect(result.vocab).toBe(32_000);
    expect(result.cases.map((c) => c.name)).toEqual(STRUCTURED_CASES.map((c) => c.name));
    expect(new Set(result.cases.map((c) => c.kind))).toEqual(new Set(["json_schema", "regex", "grammar"]));
    for (const c of result.cases) {
      expect(c.compile_ms, c.name).toBeGreaterThan(0);
      expect(c.masks, c.name).toBeGreaterThanOrEqual(2);
      expect(c.first_walk_ms.max, c.name).toBeGreaterThanOrEqual(c.first_walk_ms.mean);
      expect(c.later_walks_ms.max, c.name).toBeGreaterThanOrEqual(c.later_walks_ms.p50);
      // The budget steers every output to close in time: 48 tokens hold each case's shortest output.
      expect(c.walks_complete, c.name).toBe(2);
    }
    reportStructuredBench(result, true, root);
    expect(JSON.parse(readFileSync(join(root, "structured.json"), "utf8"))).toEqual(result);
  });

  it("runs only the cases named", () => {
    const name = STRUCTURED_CASES[1]!.name;
    const result = runStructuredBench({ walks: 1, steps: 4, cases: [name] });
    expect(result.cases.map((c) => c.name)).toEqual([name]);
  });
});
