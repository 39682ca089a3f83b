// `luminet usage`: usage and cost rollups.
import type { Command } from "commander";
import { notImplemented } from "../not-implemented.ts";

export function registerUsage(program: Command): void {
  program
    .command("usage")
    .description("usage and cost by day, adapter and key")
    .option("--org <org>", "organization")
    .option("--since <date>", "first day (YYYY-MM-DD)")
    .option("--by <dimension>", "day | adapter | key", "day")
    .action(notImplemented("usage", "lands with the billing issue"));
}
