// How the dashboard writes numbers, money and times: the same way on every page and in every chart.

const whole = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
const compact = new Intl.NumberFormat("en-US", { notation: "compact", maximumFractionDigits: 1 });

/** 1234567 → "1,234,567" */
export function formatCount(n: number): string {
  return whole.format(n);
}

/** 1234567 → "1.2M", for axes and tight spaces. */
export function formatCompact(n: number): string {
  return compact.format(n);
}

/** The usage report's exact dollar string ("12.345678") as money; every digit kept, since it is a bill. */
export function formatUsd(exact: string): string {
  return `$${exact}`;
}

/** part / total as a percentage with one decimal, e.g. "12.5%"; the caller makes sure total > 0. */
export function percent(part: number, total: number): string {
  return `${((part / total) * 100).toFixed(1)}%`;
}

/** Micro-dollars as dollars with all six decimals, for chart labels. */
export function microsToUsd(micros: number): string {
  const dollars = Math.floor(micros / 1_000_000);
  return `$${formatCount(dollars)}.${String(micros % 1_000_000).padStart(6, "0")}`;
}

/** Micro-dollars on a chart axis: "$0", "$0.00025", "$1.5", "$12K" — three significant digits at most. */
export function formatUsdAxis(micros: number): string {
  const dollars = micros / 1_000_000;
  if (dollars >= 1000) return `$${formatCompact(dollars)}`;
  return `$${Number(dollars.toPrecision(3))}`;
}

/** A span of milliseconds as "3 s", "2 min", "5 h", "3 d". */
export function formatSpan(ms: number): string {
  if (ms < 60_000) return `${Math.max(0, Math.round(ms / 1000))} s`;
  if (ms < 3_600_000) return `${Math.round(ms / 60_000)} min`;
  if (ms < 86_400_000) return `${Math.round(ms / 3_600_000)} h`;
  return `${Math.round(ms / 86_400_000)} d`;
}

/** Milliseconds ago as "3 s ago", "2 min ago", "5 h ago", "3 d ago". */
export function formatAgo(ms: number): string {
  return `${formatSpan(ms)} ago`;
}
