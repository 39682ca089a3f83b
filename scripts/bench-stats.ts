// The arithmetic benchmark reports share: nearest-rank percentiles and rounding for the JSON.

/** Nearest-rank percentile (p in 0–100); 0 for no values. */
export function percentile(values: readonly number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] ?? 0;
}

/** Rounded to `places` decimals; never -0 (which JSON writes as 0, so a saved result would differ). */
export const round = (value: number, places = 3): number =>
  Math.round(value * 10 ** places) / 10 ** places + 0;

export interface Percentiles {
  p50: number;
  p99: number;
}

/** The median and the 99th percentile of `values`, rounded to `places` decimals. */
export function p50p99(values: readonly number[], places = 3): Percentiles {
  return { p50: round(percentile(values, 50), places), p99: round(percentile(values, 99), places) };
}
