// The `luminet` command line. Each command lives in cli/commands/<name>.ts and registers itself here.
import { Command } from "commander";
import { CliError } from "./run-command.ts";

type Register = (program: Command) => void;

// Each top-level command's module, in the order help lists them. Only the module of the command being run
// is loaded (loading all of them, with the gateway, the database drivers and the benchmarks behind them,
// took ~2 s before any command started); help, --version and an unknown name load every one.
const COMMANDS: Record<string, () => Promise<Register>> = {
  dev: async () => (await import("./commands/dev.ts")).registerDev,
  gateway: async () => (await import("./commands/gateway.ts")).registerGateway,
  worker: async () => (await import("./commands/worker.ts")).registerWorker,
  meter: async () => (await import("./commands/meter.ts")).registerMeter,
  migrate: async () => (await import("./commands/migrate.ts")).registerMigrate,
  model: async () => (await import("./commands/model.ts")).registerModel,
  generate: async () => (await import("./commands/generate.ts")).registerGenerate,
  adapters: async () => (await import("./commands/adapters.ts")).registerAdapters,
  batches: async () => (await import("./commands/batches.ts")).registerBatches,
  files: async () => (await import("./commands/files.ts")).registerFiles,
  keys: async () => (await import("./commands/keys.ts")).registerKeys,
  quota: async () => (await import("./commands/quota.ts")).registerQuota,
  orgs: async () => (await import("./commands/orgs.ts")).registerOrgs,
  webhooks: async () => (await import("./commands/webhooks.ts")).registerWebhooks,
  bases: async () => (await import("./commands/bases.ts")).registerBases,
  usage: async () => (await import("./commands/usage.ts")).registerUsage,
  bench: async () => (await import("./commands/bench.ts")).registerBench,
};

const program = new Command("luminet")
  .description("Serve hundreds of LoRA adapters on one base model behind an OpenAI-compatible API")
  .version("0.1.0")
  // A hint, not the whole help: the error itself should be the last thing the eye lands on.
  .showHelpAfterError("(add --help for the options)");

const named = process.argv[2];
const needed =
  named !== undefined && Object.hasOwn(COMMANDS, named) ? [COMMANDS[named]!] : Object.values(COMMANDS);
for (const load of needed) (await load())(program);

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
