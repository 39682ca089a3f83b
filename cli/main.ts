// The `luminet` command line. Each command lives in cli/commands/<name>.ts and registers itself here.
import { Command } from "commander";
import { registerAdapters } from "./commands/adapters.ts";
import { registerBases } from "./commands/bases.ts";
import { registerBatches } from "./commands/batches.ts";
import { registerBench } from "./commands/bench.ts";
import { registerDev } from "./commands/dev.ts";
import { registerGateway } from "./commands/gateway.ts";
import { registerGenerate } from "./commands/generate.ts";
import { registerKeys } from "./commands/keys.ts";
import { registerMeter } from "./commands/meter.ts";
import { registerMigrate } from "./commands/migrate.ts";
import { registerModel } from "./commands/model.ts";
import { registerOrgs } from "./commands/orgs.ts";
import { registerQuota } from "./commands/quota.ts";
import { registerUsage } from "./commands/usage.ts";
import { registerWebhooks } from "./commands/webhooks.ts";
import { registerWorker } from "./commands/worker.ts";
import { CliError } from "./run-command.ts";

const program = new Command("luminet")
  .description("Serve hundreds of LoRA adapters on one base model behind an OpenAI-compatible API")
  .version("0.1.0")
  .showHelpAfterError();

for (const register of [
  registerDev,
  registerGateway,
  registerWorker,
  registerMeter,
  registerMigrate,
  registerModel,
  registerGenerate,
  registerAdapters,
  registerBatches,
  registerKeys,
  registerQuota,
  registerOrgs,
  registerWebhooks,
  registerBases,
  registerUsage,
  registerBench,
]) {
  register(program);
}

try {
  await program.parseAsync(process.argv);
} catch (error) {
  // What a command did not report itself (runCommand): a bad flag's message alone, anything else with its
  // stack; then exit at once, as a crash would, whatever the command left open (sockets, threads).
  const known = error instanceof CliError;
  const text =
    error instanceof Error ? (known ? error.message : (error.stack ?? error.message)) : String(error);
  process.stderr.write(`luminet: ${text}\n`);
  process.exit(1);
}
