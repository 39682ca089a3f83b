// `luminet meter`: usage events from NATS into billing rows in Postgres, exactly once.
import type { Command } from "commander";
import { notImplemented } from "../not-implemented.ts";

export function registerMeter(program: Command): void {
  program
    .command("meter")
    .description("turn usage events into billing rows in Postgres, exactly once (NATS_URL, DATABASE_URL)")
    .action(notImplemented("meter", "lands with the billing issue"));
}
