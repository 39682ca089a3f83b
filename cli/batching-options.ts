// The scheduler's two knobs, as `luminet worker` and `luminet generate` both take them: how much one step
// may do, and how much memory keeps earlier prompts' prefixes (docs/OPERATIONS.md, "Tuning a worker's
// steps and prompt cache").
import type { Command } from "commander";

/** Adds --step-tokens (default 1024) and --prefix-cache-bytes (default `prefixCacheDefault`). */
export function batchingOptions(command: Command, prefixCacheDefault: string): Command {
  return command
    .option(
      "--step-tokens <n>",
      "tokens one step processes: running sequences plus prefilled prompts",
      "1024",
    )
    .option(
      "--prefix-cache-bytes <n>",
      "memory for earlier prompts' prefix caches: a prompt that starts the same way on the same adapter prefills only the rest (cuda: whole cache rows beyond --max-batch; 0: none)",
      prefixCacheDefault,
    );
}
