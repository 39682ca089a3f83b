// `luminet gateway`: the OpenAI-compatible API on Node, against NATS (NATS_URL) and the database
// (DATABASE_URL). Each base it serves is named with the folder holding its tokenizer: --model NAME=DIR.
// SIGTERM or SIGINT closes it: open streams end, their runs are cancelled.
import type { Command } from "commander";
import { logger } from "../../core/logger.ts";
import { defaultDatabaseUrl, describeDatabaseUrl } from "../../db/open.ts";
import { sourcePrefixes } from "../../gateway/adapter-sources.ts";
import { parseBaseModelSource } from "../../gateway/base-loader.ts";
import { DEFAULT_BATCH_FILL } from "../../gateway/batch-room.ts";
import { type ScaleOptions, scaleDefaults, scaleOptionsProblem } from "../../gateway/fleet-scale.ts";
import { DEFAULT_BATCH_CONCURRENCY, startNodeGateway } from "../../gateway/node.ts";
import { DEFAULT_ORG_COMPILE_MS_PER_MINUTE } from "../../gateway/org-compile-time.ts";
import { samplingDefaultsSource } from "../../gateway/sampling-defaults.ts";
import { SecretBox } from "../../gateway/secret-box.ts";
import { DEFAULT_RETENTION_DAYS } from "../../gateway/stored-retention.ts";
import { bytes, count, port, seconds } from "../flags.ts";
import { assertPortFree } from "../port-free.ts";
import { CliError, setting } from "../run-command.ts";
import { serviceAction, stopOnSignal } from "../service.ts";

interface GatewayFlags {
  port: string;
  host: string;
  model: string[];
  namespace?: string;
  withMeter?: boolean;
  allowPrivateWebhooks?: boolean;
  blobs: string;
  adapterSources?: string;
  maxAdapterRank: string;
  maxAdapterBytes: string;
  coldStartTimeout: string;
  streamHeadersAfter: string;
  keepAlive: string;
  responseRetentionDays: string;
  samplingDefaults: string;
  batchConcurrency: string;
  batchFill: string;
  maxFileBytes: string;
  maxOrgFileStorage: string;
  maxOrgAdapterStorage: string;
  maxOrgConversationStorage: string;
  maxOrgResponseStorage: string;
  orgCompileSeconds: string;
  minWorkers: string;
  maxWorkers: string;
  targetUtilization: string;
  workerTokensPerS?: string;
}

const collect = (value: string, previous: string[]) => [...previous, value];

/** The autoscaling signal's flags, checked: 0 ≤ min ≤ max, utilization in (0, 1]. */
function scaleOptions(flags: GatewayFlags): ScaleOptions {
  const options = {
    minWorkers: count("--min-workers", flags.minWorkers, 0),
    maxWorkers: count("--max-workers", flags.maxWorkers, 1),
    targetUtilization: Number(flags.targetUtilization),
    ...(flags.workerTokensPerS === undefined
      ? {}
      : { tokensPerSecondPerWorker: count("--worker-tokens-per-s", flags.workerTokensPerS, 1) }),
  };
  const names = { min: "--min-workers", max: "--max-workers", utilization: "--target-utilization" };
  const problem = scaleOptionsProblem(options, names, flags.targetUtilization);
  if (problem) throw new CliError(problem);
  return options;
}

/** --org-compile-seconds: more than 0 (with none, no request could ask for a grammar or a schema). */
function compileSeconds(value: string): number {
  const s = seconds("--org-compile-seconds", value);
  if (s === 0) throw new CliError("--org-compile-seconds must be more than 0");
  return s;
}

/** A share in (0, 1], or a CliError naming the flag. */
function share(flag: string, value: string): number {
  const n = Number(value);
  if (!(n > 0 && n <= 1)) throw new CliError(`${flag} must be a number in (0, 1], got "${value}"`);
  return n;
}

async function runGateway(flags: GatewayFlags): Promise<void> {
  if (flags.model.length === 0) {
    throw new CliError("name at least one base model: --model NAME=DIR (the folder with its tokenizer.json)");
  }
  const listenPort = port("--port", flags.port);
  await assertPortFree(flags.host, listenPort);
  // A bad LUMINET_SECRETS_KEY stops the gateway here, before it opens anything.
  const secrets = setting(() => SecretBox.fromEnv(process.env));
  const databaseUrl = process.env.DATABASE_URL || defaultDatabaseUrl();
  const natsUrl = process.env.NATS_URL || "nats://127.0.0.1:4222";
  const models = flags.model.map((spec) => setting(() => parseBaseModelSource(spec)));
  const gateway = await startNodeGateway({
    port: listenPort,
    hostname: flags.host,
    databaseUrl,
    natsUrl,
    models,
    withMeter: flags.withMeter === true,
    allowPrivateWebhooks:
      flags.allowPrivateWebhooks === true || process.env.LUMINET_ALLOW_PRIVATE_WEBHOOKS === "1",
    secrets,
    blobs: flags.blobs,
    adapterSources: sourcePrefixes(flags.adapterSources),
    maxAdapterRank: count("--max-adapter-rank", flags.maxAdapterRank),
    maxAdapterBytes: bytes("--max-adapter-bytes", flags.maxAdapterBytes, 1),
    coldStartTimeoutMs: seconds("--cold-start-timeout", flags.coldStartTimeout) * 1000,
    streamHeadersAfterMs: seconds("--stream-headers-after", flags.streamHeadersAfter) * 1000,
    keepAliveMs: seconds("--keep-alive", flags.keepAlive) * 1000,
    responseRetentionDays: count("--response-retention-days", flags.responseRetentionDays, 0),
    samplingDefaults: setting(() => samplingDefaultsSource(flags.samplingDefaults, "--sampling-defaults")),
    batchConcurrency: count("--batch-concurrency", flags.batchConcurrency, 0),
    batchFill: share("--batch-fill", flags.batchFill),
    maxFileBytes: bytes("--max-file-bytes", flags.maxFileBytes, 1),
    maxOrgFileBytes: bytes("--max-org-file-storage", flags.maxOrgFileStorage, 1),
    maxOrgAdapterBytes: bytes("--max-org-adapter-storage", flags.maxOrgAdapterStorage, 1),
    maxOrgConversationBytes: bytes("--max-org-conversation-storage", flags.maxOrgConversationStorage, 1),
    maxOrgResponseBytes: bytes("--max-org-response-storage", flags.maxOrgResponseStorage, 1),
    orgCompileMsPerMinute: compileSeconds(flags.orgCompileSeconds) * 1000,
    scale: scaleOptions(flags),
    ...(flags.namespace ? { namespace: flags.namespace } : {}),
  });
  // The address it is bound to, and the URL that reaches it from this machine (127.0.0.1 for 0.0.0.0).
  const bound = `${flags.host}:${new URL(gateway.url).port}`;
  logger.info(
    {
      listening: bound,
      url: gateway.url,
      database: describeDatabaseUrl(databaseUrl),
      bases: models.map((m) => m.name),
    },
    `gateway listening on ${bound} (${gateway.url} from this machine)`,
  );
  if (!secrets.sealing) {
    logger.warn("LUMINET_SECRETS_KEY is not set: new webhook signing secrets are stored unsealed");
  }
  await stopOnSignal("gateway closing", () => gateway.close());
}

export function registerGateway(program: Command): void {
  program
    .command("gateway")
    .description("serve the OpenAI-compatible API (NATS_URL, DATABASE_URL)")
    .option("--port <port>", "HTTP port", "8080")
    .option("--host <host>", "interface to listen on", "0.0.0.0")
    .option("--model <name=dir>", "a base model served and its folder (repeatable)", collect, [])
    .option(
      "--namespace <ns>",
      "prefix of every NATS subject, stream and bucket, as the workers use (LUMINET_NAMESPACE)",
      process.env.LUMINET_NAMESPACE,
    )
    .option(
      "--blobs <dir|url>",
      "where accepted adapters are stored, the workers' --blobs: a folder, s3://bucket/prefix or r2://bucket/prefix (LUMINET_BLOBS)",
      process.env.LUMINET_BLOBS ?? ".luminet/blobs",
    )
    .option(
      "--adapter-sources <prefixes>",
      "comma-separated URL prefixes (https://, s3://, r2://) admins may create adapters from by URL; none by default (LUMINET_ADAPTER_SOURCES)",
      process.env.LUMINET_ADAPTER_SOURCES,
    )
    .option(
      "--max-adapter-rank <n>",
      "largest adapter rank accepted at upload (the workers' --max-rank)",
      "16",
    )
    .option("--max-adapter-bytes <n>", "largest adapter upload in bytes (512MiB, 1GiB …)", "1GiB")
    .option(
      "--cold-start-timeout <seconds>",
      "how long a request for a base with no live worker waits for one to start (scaling from zero); 0: 503 at once (LUMINET_COLD_START_TIMEOUT)",
      process.env.LUMINET_COLD_START_TIMEOUT ?? "120",
    )
    .option(
      "--stream-headers-after <seconds>",
      "a stream with no first token by then answers 200 at once and tells later errors in-band (LUMINET_STREAM_HEADERS_AFTER)",
      process.env.LUMINET_STREAM_HEADERS_AFTER ?? "10",
    )
    .option(
      "--keep-alive <seconds>",
      "how often a waiting stream gets an SSE keep-alive comment (LUMINET_KEEP_ALIVE)",
      process.env.LUMINET_KEEP_ALIVE ?? "15",
    )
    .option(
      "--sampling-defaults <source>",
      "model: what a request leaves out of its sampling comes from each base's generation_config.json, as vLLM serves; openai: OpenAI's defaults (LUMINET_SAMPLING_DEFAULTS)",
      process.env.LUMINET_SAMPLING_DEFAULTS ?? "model",
    )
    .option(
      "--response-retention-days <days>",
      "how long stored responses and chat completions are kept; 0: until deleted (LUMINET_RESPONSE_RETENTION_DAYS)",
      process.env.LUMINET_RESPONSE_RETENTION_DAYS ?? String(DEFAULT_RETENTION_DAYS),
    )
    .option(
      "--batch-concurrency <n>",
      "most lines of Batch API batches this process runs at once, within the room the workers leave; 0: it runs none (LUMINET_BATCH_CONCURRENCY)",
      process.env.LUMINET_BATCH_CONCURRENCY ?? String(DEFAULT_BATCH_CONCURRENCY),
    )
    .option(
      "--batch-fill <share>",
      "the share of each worker's --max-batch batch lines may fill, in (0, 1]; the rest stays for live bursts (LUMINET_BATCH_FILL)",
      process.env.LUMINET_BATCH_FILL ?? String(DEFAULT_BATCH_FILL),
    )
    .option(
      "--max-file-bytes <n>",
      "largest file the Files API takes, a batch's input (LUMINET_MAX_FILE_BYTES)",
      process.env.LUMINET_MAX_FILE_BYTES ?? "64MiB",
    )
    .option(
      "--max-org-file-storage <n>",
      "most bytes one org's files may hold together, batches' output files included; an upload past it gets 400 (LUMINET_MAX_ORG_FILE_STORAGE)",
      process.env.LUMINET_MAX_ORG_FILE_STORAGE ?? "100GiB",
    )
    .option(
      "--max-org-adapter-storage <n>",
      "most bytes one org's adapters may hold together in the blob store; a create past it gets 400 (LUMINET_MAX_ORG_ADAPTER_STORAGE)",
      process.env.LUMINET_MAX_ORG_ADAPTER_STORAGE ?? "100GiB",
    )
    .option(
      "--max-org-conversation-storage <n>",
      "most bytes one org's conversations may hold together (their items and metadata as JSON); adding past it gets 400 (LUMINET_MAX_ORG_CONVERSATION_STORAGE)",
      process.env.LUMINET_MAX_ORG_CONVERSATION_STORAGE ?? "10GiB",
    )
    .option(
      "--max-org-response-storage <n>",
      "most bytes one org's stored responses and chat completions may hold together, as the database stores them (compressed where large, so more JSON than that fits); once it holds that, requests that would store get 400 (LUMINET_MAX_ORG_RESPONSE_STORAGE)",
      process.env.LUMINET_MAX_ORG_RESPONSE_STORAGE ?? "100GiB",
    )
    .option(
      "--org-compile-seconds <seconds>",
      "how much of each minute of this process one org's requests may spend compiling grammars, patterns and JSON schemas; past it, those asking for one get 429 for the rest of the minute (LUMINET_ORG_COMPILE_SECONDS)",
      process.env.LUMINET_ORG_COMPILE_SECONDS ?? String(DEFAULT_ORG_COMPILE_MS_PER_MINUTE / 1000),
    )
    .option(
      "--min-workers <n>",
      "the fewest workers GET /v1/fleet/scale asks for per base (LUMINET_MIN_WORKERS)",
      process.env.LUMINET_MIN_WORKERS ?? String(scaleDefaults.minWorkers),
    )
    .option(
      "--max-workers <n>",
      "the most workers it asks for per base (LUMINET_MAX_WORKERS)",
      process.env.LUMINET_MAX_WORKERS ?? String(scaleDefaults.maxWorkers),
    )
    .option(
      "--target-utilization <share>",
      "the share of a worker's sequences and tokens/s it plans to use, leaving headroom (LUMINET_TARGET_UTILIZATION)",
      process.env.LUMINET_TARGET_UTILIZATION ?? String(scaleDefaults.targetUtilization),
    )
    .option(
      "--worker-tokens-per-s <n>",
      "a worker's tokens/s at full load (measured with luminet bench): the signal then also sizes the fleet by the token rate; unset, by sequences only (LUMINET_WORKER_TOKENS_PER_S)",
      process.env.LUMINET_WORKER_TOKENS_PER_S || undefined,
    )
    .option("--with-meter", "also run the usage meter (usage events into billing rows) in this process")
    .option(
      "--allow-private-webhooks",
      "webhook endpoints may name this host or a private address, for webhooks into your own network (LUMINET_ALLOW_PRIVATE_WEBHOOKS=1)",
    )
    .action(serviceAction(runGateway));
}
