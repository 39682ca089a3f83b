// Reading series out of a /metrics page (Prometheus text format) in benchmarks: counters and histogram
// sums of a process they started.

/** The value of an unlabelled series, e.g. luminet_step_seconds_sum; 0 when absent. */
export function metricValue(text: string, name: string): number {
  const line = text.split("\n").find((l) => l.startsWith(`${name} `));
  return line ? Number(line.slice(name.length + 1)) : 0;
}

/** A labelled series' values by one label's value, summed over its other labels. */
export function metricByLabel(text: string, name: string, label: string): Record<string, number> {
  const values: Record<string, number> = {};
  const labelPattern = new RegExp(`(?:^|,)${label}="([^"]*)"`);
  for (const line of text.split("\n")) {
    if (!line.startsWith(`${name}{`)) continue;
    const close = line.indexOf("} ");
    const value = labelPattern.exec(line.slice(name.length + 1, close))?.[1];
    if (value === undefined) continue;
    values[value] = (values[value] ?? 0) + Number(line.slice(close + 2));
  }
  return values;
}
