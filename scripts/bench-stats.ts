// The arithmetic benchmark reports share: nearest-rank percentiles and rounding for the JSON.

/** Nearest-rank percentile (p in 0–100); 0 for no values. */
export function percentile(values: readonly number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] ?? 0;
}

/** Rounded to `places` decimals. */
export const round = (value: number, places = 3): number => Math.round(value * 10 ** places) / 10 ** places;
