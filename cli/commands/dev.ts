// `luminet dev` (what `npm start` runs): the whole stack in one process on embedded defaults; prints the
// demo API key and a curl to paste. See gateway/dev-stack.ts.
import type { Command } from "commander";
import { logger } from "../../core/logger.ts";
import { sourcePrefixes } from "../../gateway/adapter-sources.ts";
import { API_KEY_FORMAT, isWellFormedApiKey } from "../../gateway/api-keys.ts";
import { DEV_BASE, startDevStack } from "../../gateway/dev-stack.ts";
import { port } from "../flags.ts";
import { assertPortFree } from "../port-free.ts";
import { CliError, runCommand } from "../run-command.ts";
import { serviceAction, stopOnSignal } from "../service.ts";

interface DevFlags {
  port: string;
  host: string;
  data: string;
  nats?: string;
  databaseUrl?: string;
  adapterSources?: string;
}

/** The banner's models: the base, then the live demo adapters (the first … the last, when more than two). */
function modelsLine(models: readonly string[]): string {
  const shown = models.length > 2 ? [`${models[0]} … ${models.at(-1)}`] : models;
  return [DEV_BASE, ...shown].join(", ");
}

async function runDev(flags: DevFlags, apiKey: string | undefined): Promise<void> {
  const listenPort = port("--port", flags.port);
  await assertPortFree(flags.host, listenPort);
  const stack = await startDevStack({
    home: flags.data,
    port: listenPort,
    hostname: flags.host,
    ...(flags.nats ? { natsUrl: flags.nats } : {}),
    ...(flags.databaseUrl ? { databaseUrl: flags.databaseUrl } : {}),
    ...(apiKey ? { apiKey } : {}),
    adapterSources: sourcePrefixes(flags.adapterSources),
  });
  logger.info({ url: stack.url, models: stack.models }, `luminet dev listening on ${stack.url}`);
  const example = stack.models[0] ?? DEV_BASE;
  process.stderr.write(
    [
      "",
      `  Luminet dev is up on ${stack.url} (dashboard: ${stack.url}/dashboard, metrics: ${stack.url}/metrics)`,
      `  Demo API key (org "demo"): ${stack.apiKey}`,
      `  Models: ${modelsLine(stack.models)}`,
      "",
      "  For the CLI (luminet adapters, keys, batches, usage …):",
      `  export LUMINET_GATEWAY=${stack.url} LUMINET_API_KEY=${stack.apiKey}`,
      "",
      `  curl ${stack.url}/v1/chat/completions \\`,
      `    -H "Authorization: Bearer ${stack.apiKey}" -H "Content-Type: application/json" \\`,
      `    -d '{"model": "${example}", "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 16}'`,
      "",
      "",
    ].join("\n"),
  );
  const engineLost = stack.engineLost.then(async () => {
    await stack.close();
    // Its worker cannot serve any more: exit, as `luminet worker` does, rather than answer 503s.
    process.exit(1);
  });
  await Promise.race([stopOnSignal("luminet dev closing", () => stack.close()), engineLost]);
}

export function registerDev(program: Command): void {
  program
    .command("dev")
    .description("run gateway, worker and meter in one process on embedded defaults (PGlite, in-process bus)")
    .option("--port <port>", "HTTP port", "8787")
    .option("--host <host>", "interface to listen on", "127.0.0.1")
    .option(
      "--data <dir>",
      "folder for the embedded database, blobs and model",
      process.env.LUMINET_HOME ?? ".luminet",
    )
    .option("--nats <url>", "use this NATS server instead of the in-process bus")
    .option("--database-url <url>", "use this database instead of PGlite under --data")
    .option(
      "--adapter-sources <prefixes>",
      "comma-separated URL prefixes admins may create adapters from by URL, as the gateway's (LUMINET_ADAPTER_SOURCES)",
      process.env.LUMINET_ADAPTER_SOURCES,
    )
    .action(async (flags: DevFlags) => {
      const apiKey = process.env.LUMINET_DEV_API_KEY;
      // Refused before the model is generated, as a line for the developer at the terminal.
      if (apiKey && !isWellFormedApiKey(apiKey)) {
        return runCommand("dev", async () => {
          throw new CliError(`LUMINET_DEV_API_KEY must be ${API_KEY_FORMAT}`);
        });
      }
      await serviceAction((f: DevFlags) => runDev(f, apiKey))(flags);
    });
}
