// `luminet batches ...`: the Batch API through the gateway (/v1/files, /v1/batches) with the caller's key.
// `create` uploads a JSONL file of requests and starts a batch (a refused batch's file is deleted again);
// with --wait it follows the batch with a progress bar (on stderr, when it is a terminal) and saves the
// answers when it ends. `results` saves an ended batch's output and error files. Tables and lines for
// people, --json for scripts.
import { writeFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { basename } from "node:path";
import { SingleBar } from "cli-progress";
import type { Command } from "commander";
import {
  BATCH_ENDPOINTS,
  type BatchObject,
  type FileObject,
  type ListPage,
  MAX_FILE_SECONDS,
  MIN_FILE_SECONDS,
} from "../../schema/batch-api.ts";
import { count } from "../flags.ts";
import {
  callGateway,
  callGatewayText,
  type GatewayFlags,
  gatewayOptions,
  jsonBody,
} from "../gateway-client.ts";
import { CliError, runCommand } from "../run-command.ts";
import { instantCell, table } from "../table.ts";

interface ConnectionFlags extends GatewayFlags {
  json?: boolean;
}

interface SaveFlags extends ConnectionFlags {
  output?: string;
  errors?: string;
}

interface CreateFlags extends SaveFlags {
  file: string;
  endpoint: string;
  metadata: string[];
  wait?: boolean;
  pollSeconds: string;
  keepHours?: string;
}

const ENDED = new Set(["completed", "expired", "cancelled", "failed"]);
const collect = (value: string, previous: string[]) => [...previous, value];

function summary(b: BatchObject): string {
  const { total, completed, failed } = b.request_counts;
  return `${b.id} ${b.status}: ${completed} of ${total} answered, ${failed} failed`;
}

function print(flags: ConnectionFlags, batch: BatchObject): void {
  process.stdout.write(flags.json ? `${JSON.stringify(batch)}\n` : `${summary(batch)}\n`);
}

function metadataOf(pairs: readonly string[]): Record<string, string> | undefined {
  if (pairs.length === 0) return undefined;
  return Object.fromEntries(
    pairs.map((pair) => {
      const at = pair.indexOf("=");
      if (at <= 0) throw new CliError(`--metadata ${pair}: expected KEY=VALUE`);
      return [pair.slice(0, at), pair.slice(at + 1)];
    }),
  );
}

/** --keep-hours as the API's seconds, within its bounds (an hour to 30 days). */
function keepSeconds(hours: string): number {
  const seconds = Math.round(Number(hours) * 3600);
  if (!/^\d+(\.\d+)?$/.test(hours) || seconds < MIN_FILE_SECONDS || seconds > MAX_FILE_SECONDS) {
    throw new CliError(`--keep-hours ${hours}: expected hours from 1 to ${MAX_FILE_SECONDS / 3600}`);
  }
  return seconds;
}

async function getBatch(flags: GatewayFlags, id: string): Promise<BatchObject> {
  return (await callGateway(flags, "GET", `/v1/batches/${encodeURIComponent(id)}`)) as BatchObject;
}

/** Without a terminal (CI, a log file), the most often a progress line is written while nothing ends. */
const PROGRESS_LINE_MS = 30_000;

/**
 * Follows a batch until it ends: a bar of its answered lines on stderr when that is a terminal, else a
 * line when its status changes and at most every 30 s while its count moves, so a log shows it alive.
 */
async function waitFor(flags: GatewayFlags, batch: BatchObject, pollMs: number): Promise<BatchObject> {
  const bar = process.stderr.isTTY
    ? new SingleBar({
        format: `${batch.id} [{bar}] {value}/{total} requests | {status}`,
        stream: process.stderr,
        hideCursor: true,
      })
    : null;
  const done = (b: BatchObject) => b.request_counts.completed + b.request_counts.failed;
  let said = { status: "", done: -1, at: 0 };
  const sayProgress = (b: BatchObject) => {
    const now = Date.now();
    const moved = done(b) !== said.done && now - said.at >= PROGRESS_LINE_MS;
    if (b.status === said.status && !moved) return;
    process.stderr.write(`${b.id}: ${done(b)}/${b.request_counts.total} requests, ${b.status}\n`);
    said = { status: b.status, done: done(b), at: now };
  };
  if (bar) bar.start(batch.request_counts.total, 0, { status: batch.status });
  else sayProgress(batch);
  let current = batch;
  while (!ENDED.has(current.status)) {
    await new Promise((resolve) => setTimeout(resolve, pollMs));
    current = await getBatch(flags, batch.id);
    if (bar) bar.update(done(current), { status: current.status });
    else sayProgress(current);
  }
  bar?.stop();
  return current;
}

/** Writes an ended batch's output and error files (when it has them) where the flags say, or beside the id. */
async function save(flags: SaveFlags, batch: BatchObject): Promise<string[]> {
  const written: string[] = [];
  for (const [fileId, path] of [
    [batch.output_file_id, flags.output ?? `${batch.id}_output.jsonl`],
    [batch.error_file_id, flags.errors ?? `${batch.id}_errors.jsonl`],
  ] as const) {
    if (!fileId) continue;
    writeFileSync(
      path,
      await callGatewayText(flags, "GET", `/v1/files/${encodeURIComponent(fileId)}/content`),
    );
    written.push(path);
  }
  return written;
}

async function create(flags: CreateFlags): Promise<void> {
  if (!(BATCH_ENDPOINTS as readonly string[]).includes(flags.endpoint)) {
    throw new CliError(`--endpoint ${flags.endpoint}: expected one of ${BATCH_ENDPOINTS.join(", ")}`);
  }
  const pollSeconds = Number(flags.pollSeconds);
  if (!(pollSeconds > 0))
    throw new CliError(`--poll-seconds ${flags.pollSeconds}: expected a number above 0`);
  if (!flags.wait && (flags.output !== undefined || flags.errors !== undefined)) {
    throw new CliError(
      "--output and --errors say where --wait saves the files: add --wait, or save them once the batch ends with `luminet batches results ID`",
    );
  }
  const keep = flags.keepHours === undefined ? undefined : keepSeconds(flags.keepHours);
  const metadata = metadataOf(flags.metadata);
  let content: Buffer;
  try {
    content = await readFile(flags.file);
  } catch (error) {
    throw new CliError(`--file ${flags.file}: ${(error as Error).message}`);
  }
  const form = new FormData();
  form.set("purpose", "batch");
  form.set("file", new Blob([content], { type: "application/jsonl" }), basename(flags.file));
  if (keep !== undefined) {
    form.set("expires_after[anchor]", "created_at");
    form.set("expires_after[seconds]", String(keep));
  }
  const file = (await callGateway(flags, "POST", "/v1/files", { body: form })) as FileObject;
  let batch: BatchObject;
  try {
    batch = (await callGateway(
      flags,
      "POST",
      "/v1/batches",
      jsonBody({
        input_file_id: file.id,
        endpoint: flags.endpoint,
        completion_window: "24h",
        ...(keep !== undefined ? { output_expires_after: { anchor: "created_at", seconds: keep } } : {}),
        ...(metadata ? { metadata } : {}),
      }),
    )) as BatchObject;
  } catch (error) {
    // The file was uploaded for this batch alone. Should the delete fail too, the refusal is still what
    // the user needs to read; the file then goes when it expires.
    await callGateway(flags, "DELETE", `/v1/files/${encodeURIComponent(file.id)}`).catch(() => undefined);
    throw error;
  }
  if (!flags.json) process.stderr.write(`uploaded ${file.id} (${file.bytes} bytes); created ${batch.id}\n`);
  if (flags.wait) {
    batch = await waitFor(flags, batch, pollSeconds * 1000);
    const written = await save(flags, batch);
    if (!flags.json && written.length > 0) process.stderr.write(`wrote ${written.join(", ")}\n`);
  }
  print(flags, batch);
  // A script waiting on the batch learns from the exit code whether every line was answered.
  const { failed } = batch.request_counts;
  if (flags.wait && (batch.status !== "completed" || failed > 0)) {
    process.stderr.write(
      batch.status === "completed"
        ? `luminet batches create: ${failed} line(s) failed (see the error file)\n`
        : `luminet batches create: the batch ended ${batch.status}\n`,
    );
    process.exitCode = 1;
  }
}

async function list(flags: ConnectionFlags & { limit: string }): Promise<void> {
  // The API's own bounds, checked here so the refusal names the flag.
  const limit = count("--limit", flags.limit, 1, 100);
  const page = (await callGateway(flags, "GET", `/v1/batches?limit=${limit}`)) as ListPage<BatchObject>;
  if (flags.json) {
    process.stdout.write(`${JSON.stringify(page)}\n`);
    return;
  }
  const rows = page.data.map((b) => [
    b.id,
    b.status,
    b.endpoint,
    `${b.request_counts.completed}/${b.request_counts.total}`,
    String(b.request_counts.failed),
    instantCell(b.created_at),
  ]);
  process.stdout.write(`${table(["ID", "STATUS", "ENDPOINT", "ANSWERED", "FAILED", "CREATED"], rows)}\n`);
}

async function results(flags: SaveFlags, id: string): Promise<void> {
  const batch = await getBatch(flags, id);
  if (!ENDED.has(batch.status)) {
    throw new CliError(`${id} is ${batch.status}: its files are written when it ends (or use create --wait)`);
  }
  const written = await save(flags, batch);
  if (flags.json) process.stdout.write(`${JSON.stringify({ batch, written })}\n`);
  else process.stdout.write(written.length > 0 ? `wrote ${written.join(", ")}\n` : `${id} has no files\n`);
}

const run = (command: string, action: () => Promise<void>) => runCommand(`batches ${command}`, action);

export function registerBatches(program: Command): void {
  const batches = program
    .command("batches")
    .description("run a JSONL file of API requests as a Batch API batch, through the gateway");

  const withConnection = (command: Command) =>
    gatewayOptions(command, "an API key of the org").option("--json", "print the API's JSON");

  withConnection(
    batches
      .command("create")
      .description("upload a JSONL file of requests and start a batch of them")
      .requiredOption(
        "--file <path>",
        'a JSONL file: {"custom_id", "method": "POST", "url", "body"} per line',
      )
      .option("--endpoint <path>", `the lines' url: ${BATCH_ENDPOINTS.join(", ")}`, "/v1/chat/completions")
      .option("--metadata <key=value>", "a metadata pair (repeatable)", collect, [])
      .option(
        "--wait",
        "follow the batch until it ends, then save its output and error files; exit 1 unless every line was answered",
      )
      .option("--output <path>", "where --wait saves the output file (default <batch id>_output.jsonl)")
      .option("--errors <path>", "where --wait saves the error file (default <batch id>_errors.jsonl)")
      .option("--poll-seconds <s>", "how often --wait asks", "2")
      .option(
        "--keep-hours <h>",
        "how long the input file and the batch's output and error files are kept, 1 to 720 (default 720: 30 days)",
      ),
  ).action((flags: CreateFlags) => run("create", () => create(flags)));

  withConnection(
    batches
      .command("list")
      .description("the org's batches, newest first")
      .option("--limit <n>", "how many, 1 to 100", "20"),
  ).action((flags: ConnectionFlags & { limit: string }) => run("list", () => list(flags)));

  withConnection(batches.command("get <id>").description("one batch and its counts")).action(
    (id: string, flags: ConnectionFlags) => run("get", async () => print(flags, await getBatch(flags, id))),
  );

  withConnection(batches.command("cancel <id>").description("stop the lines not yet started")).action(
    (id: string, flags: ConnectionFlags) =>
      run("cancel", async () =>
        print(
          flags,
          (await callGateway(flags, "POST", `/v1/batches/${encodeURIComponent(id)}/cancel`)) as BatchObject,
        ),
      ),
  );

  withConnection(
    batches
      .command("results <id>")
      .description("save an ended batch's output and error files")
      .option("--output <path>", "where to save the output file (default <batch id>_output.jsonl)")
      .option("--errors <path>", "where to save the error file (default <batch id>_errors.jsonl)"),
  ).action((id: string, flags: SaveFlags) => run("results", () => results(flags, id)));
}
