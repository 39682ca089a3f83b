// `luminet worker`: one process per GPU, pulling requests from NATS.
import type { Command } from "commander";
import { notImplemented } from "../not-implemented.ts";

export function registerWorker(program: Command): void {
  program
    .command("worker")
    .description(
      "serve one base model: pull requests from NATS, batch mixed adapters, stream tokens (NATS_URL)",
    )
    .requiredOption("--model <dir>", "Hugging Face model folder")
    .requiredOption("--base <name>", "base model name requests use")
    .option("--device <device>", "cpu | webgpu | cuda", "cpu")
    .option("--slots <n>", "adapter slots on the device", "16")
    .option("--max-adapters-per-batch <n>", "distinct adapters in one step", "16")
    .option("--ram-cache-bytes <n>", "host RAM tier budget")
    .option("--disk-cache <dir>", "local disk tier folder")
    .option("--disk-cache-bytes <n>", "local disk tier budget")
    .option("--blobs <url>", "blob store: a folder, s3://, r2:// or https:// URL")
    .option("--metrics-port <port>", "serve /metrics on this port")
    .action(notImplemented("worker", "lands with the worker issue"));
}
