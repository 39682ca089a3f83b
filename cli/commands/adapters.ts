// `luminet adapters ...`: adapters as first-class resources.
import type { Command } from "commander";
import { notImplemented } from "../not-implemented.ts";

export function registerAdapters(program: Command): void {
  const adapters = program.command("adapters").description("manage LoRA adapters");
  const pending = "lands with the adapters issue";
  adapters
    .command("create <name> <dir>")
    .description("upload a PEFT adapter folder")
    .requiredOption("--base <base>", "base model")
    .action(notImplemented("adapters create", pending));
  adapters.command("list").description("list adapters").action(notImplemented("adapters list", pending));
  adapters
    .command("set-traffic <alias> <weights...>")
    .description("split an alias's traffic across versions, e.g. v3=90 v4=10")
    .action(notImplemented("adapters set-traffic", pending));
  adapters
    .command("set-pinned <name> <pinned>")
    .description("pin (true) or unpin (false) an adapter on every worker of its base")
    .action(notImplemented("adapters set-pinned", pending));
  adapters
    .command("delete <name>")
    .description("delete an adapter")
    .action(notImplemented("adapters delete", pending));
}
