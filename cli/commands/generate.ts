// `luminet generate`: run a JSONL batch through the engine, continuously batched with mixed adapters.
import type { Command } from "commander";
import { notImplemented } from "../not-implemented.ts";

export function registerGenerate(program: Command): void {
  program
    .command("generate")
    .description("run every line of a JSONL file together as one mixed-adapter workload")
    .requiredOption("--model <dir>", "Hugging Face model folder")
    .requiredOption("--batch <file>", "JSONL requests")
    .option("--device <device>", "cpu | webgpu | cuda", "cpu")
    .action(notImplemented("generate", "lands with the engine issue"));
}
