// Plain-text tables for people: columns padded to their widest cell, two spaces apart; columns from
// `numericFrom` on hold numbers and align right; instants in them are written one way for every list.
export function table(header: string[], rows: string[][], numericFrom = header.length): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  const line = (cells: string[]) =>
    cells
      .map((cell, i) => (i >= numericFrom ? cell.padStart(widths[i]!) : cell.padEnd(widths[i]!)))
      .join("  ")
      .trimEnd();
  return [line(header), ...rows.map(line)].join("\n");
}

/** A Unix time (seconds) as a table cell: ISO 8601 to the second, UTC, as every list prints it. */
export function instantCell(seconds: number): string {
  return new Date(seconds * 1000).toISOString().replace(/\.\d{3}Z$/, "Z");
}
