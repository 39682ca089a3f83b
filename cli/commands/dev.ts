// `luminet dev`: the whole stack in one process on embedded defaults.
import type { Command } from "commander";
import { notImplemented } from "../not-implemented.ts";

export function registerDev(program: Command): void {
  program
    .command("dev")
    .description("run gateway, worker and meter in one process on embedded defaults (PGlite, in-process bus)")
    .option("--port <port>", "HTTP port", "8080")
    .option("--data <dir>", "folder for the embedded database, blobs and models", ".luminet")
    .action(notImplemented("dev", "lands with the gateway issue"));
}
