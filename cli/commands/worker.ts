// `luminet worker`: one process per GPU, pulling requests from NATS (NATS_URL). SIGTERM or SIGINT drains
// it: no more pulls, requests that have not started go back to the queue, running ones finish, then it
// exits 0. A worker whose engine thread ended on its own drains the same way and exits 1.
import { hostname } from "node:os";
import { join, resolve } from "node:path";
import type { Command } from "commander";
import type { Bus } from "../../bus/bus.ts";
import { connectJetStreamBus } from "../../bus/jetstream.ts";
import { openBlobStore } from "../../worker/adapters/blob-store.ts";
import { parseDevice } from "../../worker/engine/device.ts";
import { LuminetWorker } from "../../worker/main.ts";
import { batchingOptions } from "../batching-options.ts";
import { bytes, count, port, QUANTIZE_HELP, quantize } from "../flags.ts";
import { CliError } from "../run-command.ts";
import { serviceAction, stopOnSignal } from "../service.ts";

interface WorkerFlags {
  model: string;
  base: string;
  device: string;
  slots: string;
  maxAdaptersPerBatch?: string;
  maxRank: string;
  maxBatch: string;
  maxContext: string;
  stepTokens: string;
  prefixCacheBytes: string;
  ramCacheBytes: string;
  diskCache: string;
  diskCacheBytes: string;
  usageSpool: string;
  blobs: string;
  metricsPort?: string;
  workerId: string;
  namespace?: string;
  ackWaitMs: string;
  heartbeatTtlMs: string;
  threads?: string;
  prepackWeights?: boolean;
  quantize?: string;
}

async function runWorker(flags: WorkerFlags): Promise<void> {
  const servers = process.env.NATS_URL;
  if (!servers) throw new CliError("NATS_URL is not set: point it at a NATS server with JetStream");
  const ackWaitMs = count("--ack-wait-ms", flags.ackWaitMs, 100);
  const options = {
    base: flags.base,
    workerId: flags.workerId,
    modelDir: resolve(flags.model),
    device: parseDevice(flags.device),
    slots: count("--slots", flags.slots),
    maxAdaptersPerBatch: count("--max-adapters-per-batch", flags.maxAdaptersPerBatch ?? flags.slots),
    maxRank: count("--max-rank", flags.maxRank),
    maxBatch: count("--max-batch", flags.maxBatch),
    maxContext: count("--max-context", flags.maxContext, 2),
    stepTokens: count("--step-tokens", flags.stepTokens),
    ramCacheBytes: bytes("--ram-cache-bytes", flags.ramCacheBytes),
    diskCacheDir: resolve(flags.diskCache),
    diskCacheBytes: bytes("--disk-cache-bytes", flags.diskCacheBytes),
    // A spool's events belong to one deployment's usage stream: one subfolder per namespace.
    usageSpoolDir: join(resolve(flags.usageSpool), flags.namespace ?? "LUMINET"),
    blobs: openBlobStore(flags.blobs),
    ackWaitMs,
    ...(flags.threads ? { threads: count("--threads", flags.threads) } : {}),
    ...(flags.prepackWeights ? { prepackWeights: true } : {}),
    ...(flags.quantize ? { quantize: quantize(flags.quantize) } : {}),
    prefixCacheBytes: bytes("--prefix-cache-bytes", flags.prefixCacheBytes),
    ...(flags.metricsPort !== undefined ? { metricsPort: port("--metrics-port", flags.metricsPort) } : {}),
  };
  const bus: Bus = await connectJetStreamBus({
    servers,
    ackWaitMs,
    heartbeatTtlMs: count("--heartbeat-ttl-ms", flags.heartbeatTtlMs, 1000),
    connectionName: `luminet-worker ${flags.workerId}`,
    ...(flags.namespace ? { namespace: flags.namespace } : {}),
  });
  let worker: LuminetWorker;
  try {
    worker = await LuminetWorker.start({ ...options, bus });
  } catch (error) {
    await bus.close();
    throw error;
  }
  const engineLost = worker.engineLost.then(async () => {
    await bus.close();
    // The engine is gone: exit for the supervisor to start a fresh worker.
    process.exit(1);
  });
  await Promise.race([
    stopOnSignal("draining", async () => {
      await worker.drain();
      await bus.close();
    }),
    engineLost,
  ]);
}

export function registerWorker(program: Command): void {
  const command = program
    .command("worker")
    .description(
      "serve one base model: pull requests from NATS, batch mixed adapters, stream tokens (NATS_URL)",
    )
    .requiredOption("--model <dir>", "Hugging Face model folder")
    .requiredOption("--base <name>", "base model name requests use")
    .option("--device <device>", "cpu | webgpu | cuda", "cpu")
    .option("--slots <n>", "adapter slots on the device", "16")
    .option(
      "--max-adapters-per-batch <n>",
      "distinct adapters in one step, at most --slots (default: the value of --slots)",
    )
    .option("--ram-cache-bytes <n>", "host RAM tier budget", "4GiB")
    .option("--disk-cache <dir>", "local disk tier folder", ".luminet/adapter-cache")
    .option("--disk-cache-bytes <n>", "local disk tier budget", "20GiB")
    .option(
      "--usage-spool <dir>",
      "folder where usage events wait until NATS stored them; a restarted worker sends what it finds",
      ".luminet/usage-spool",
    )
    .option(
      "--blobs <url>",
      "blob store: a folder, s3://, r2:// or https:// URL",
      process.env.LUMINET_BLOBS ?? ".luminet/blobs",
    )
    .option("--metrics-port <port>", "serve /metrics on this port (0: any free port, logged)")
    .option("--max-rank <n>", "largest adapter rank a slot holds", "16")
    .option("--max-batch <n>", "most sequences running at once", "64")
    .option("--max-context <n>", "longest sequence, prompt + generated", "2048");
  batchingOptions(command, "512MiB")
    .option("--threads <n>", "onnxruntime threads (default: all cores)")
    .option(
      "--prepack-weights",
      "CPU: let each graph variant prepack its own copy of the weights — ~15 % faster steps, memory grows with the variants",
    )
    .option("--quantize <q4>", QUANTIZE_HELP)
    .option("--worker-id <id>", "this worker's id in routing and heartbeats", `${hostname()}-${process.pid}`)
    .option(
      "--namespace <ns>",
      "prefix of every NATS subject, stream and bucket (LUMINET_NAMESPACE)",
      process.env.LUMINET_NAMESPACE,
    )
    .option(
      "--ack-wait-ms <ms>",
      "how long a pulled request stays with a silent worker before redelivery",
      "30000",
    )
    .option(
      "--heartbeat-ttl-ms <ms>",
      "how long a heartbeat stays live; gateways and meters take 5000, so change it only where every process does (tests)",
      "5000",
    )
    .action(serviceAction(runWorker));
}
