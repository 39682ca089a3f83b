// The benchmarks' rounding: a small negative figure rounds to 0, not -0, so a result reads back from its
// JSON file as it was printed.
import { expect, it } from "vitest";
import { round } from "../../scripts/bench-stats.ts";

it("rounds a small negative to 0, never -0, and keeps the rest", () => {
  expect(Object.is(round(-0.0004, 2), 0)).toBe(true);
  expect(JSON.parse(JSON.stringify({ x: round(-0.0004, 2) }))).toEqual({ x: round(-0.0004, 2) });
  expect(round(-1.234, 2)).toBe(-1.23);
  expect(round(1.23456)).toBe(1.235);
});
