// `luminet gateway`: the OpenAI-compatible API on Node.
import type { Command } from "commander";
import { notImplemented } from "../not-implemented.ts";

export function registerGateway(program: Command): void {
  program
    .command("gateway")
    .description("serve the OpenAI-compatible API, admin API and dashboard (NATS_URL, DATABASE_URL)")
    .option("--port <port>", "HTTP port", "8080")
    .option("--with-meter", "also run the usage meter in this process")
    .action(notImplemented("gateway", "lands with the gateway issue"));
}
