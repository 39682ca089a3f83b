// `luminet keys ...`: API keys.
import type { Command } from "commander";
import { notImplemented } from "../not-implemented.ts";

export function registerKeys(program: Command): void {
  const keys = program.command("keys").description("manage API keys");
  const pending = "lands with the gateway issue";
  keys
    .command("create")
    .description("create an API key (shown once)")
    .option("--org <org>", "organization")
    .action(notImplemented("keys create", pending));
  keys.command("list").description("list API keys by prefix").action(notImplemented("keys list", pending));
  keys
    .command("revoke <prefix>")
    .description("revoke an API key")
    .action(notImplemented("keys revoke", pending));
}
