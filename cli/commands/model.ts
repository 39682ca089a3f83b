// `luminet model ...`: model tools.
import type { Command } from "commander";
import { notImplemented } from "../not-implemented.ts";

export function registerModel(program: Command): void {
  const model = program.command("model").description("model tools");
  model
    .command("init-tiny <dir>")
    .description("write a random-weight Llama in Hugging Face layout, with PEFT adapters under DIR/adapters/")
    .option("--shape <shape>", "tiny | bench-1b", "tiny")
    .option("--layers <n>", "number of layers")
    .option("--adapters <n>", "number of PEFT adapters", "0")
    .option("--rank <r>", "adapter rank", "8")
    .option("--seed <s>", "random seed", "0")
    .action(notImplemented("model init-tiny", "lands with the engine issue"));
}
