// Where every benchmark's result goes: bench/results/<name>.json, and with --json one line on stdout.
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";

/** Saves the result; with `json` also prints it as one line and returns true (the caller prints nothing more). */
export function saveBenchResult(
  name: string,
  result: unknown,
  json: boolean,
  resultsDir = "bench/results",
): boolean {
  mkdirSync(resultsDir, { recursive: true });
  writeFileSync(join(resultsDir, `${name}.json`), `${JSON.stringify(result, null, 2)}\n`);
  if (json) process.stdout.write(`${JSON.stringify(result)}\n`);
  return json;
}
