// A traffic weight as a person types it (`luminet adapters set-traffic --weight`, the dashboard's weight
// form): an integer from 0 to 100 in decimal digits. Number() alone would take "" and " " as 0, "0x10" as
// 16 and "1e1" as 10.

/** The weight `text` writes, or undefined when it is not an integer from 0 to 100 in decimal digits. */
export function parseTrafficWeight(text: string): number | undefined {
  if (!/^\d{1,3}$/.test(text)) return undefined;
  const weight = Number(text);
  return weight <= 100 ? weight : undefined;
}
