// A plain-text table for people: columns padded to their widest cell, two spaces apart; columns from
// `numericFrom` on hold numbers and align right.
export function table(header: string[], rows: string[][], numericFrom = header.length): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  const line = (cells: string[]) =>
    cells
      .map((cell, i) => (i >= numericFrom ? cell.padStart(widths[i]!) : cell.padEnd(widths[i]!)))
      .join("  ")
      .trimEnd();
  return [line(header), ...rows.map(line)].join("\n");
}
