// `luminet generate`: every line of a JSONL file runs together as one continuously batched, mixed-adapter
// workload through the worker's scheduler on one engine, every adapter resident; one output line per
// request, in input order.
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { SingleBar } from "cli-progress";
import type { Command } from "commander";
import { z } from "zod";
import { loadPeftAdapter } from "../../worker/adapters/peft.ts";
import { parseDevice } from "../../worker/engine/device.ts";
import { EngineThread } from "../../worker/engine/engine-thread.ts";
import {
  ANY_OBJECT,
  compileJsonSchema,
  type SchemaNode,
  schemaAsRead,
} from "../../worker/engine/json-schema.ts";
import { loadModelConfig, MODEL_CONTEXT } from "../../worker/engine/model-config.ts";
import { GREEDY } from "../../worker/engine/sampler.ts";
import { loadTokenizer } from "../../worker/engine/tokenizer.ts";
import { ResidentAdapters } from "../../worker/resident-adapters.ts";
import { Scheduler } from "../../worker/scheduler.ts";
import { batchingOptions } from "../batching-options.ts";
import { bytes, count, QUANTIZE_HELP, quantize } from "../flags.ts";
import { CliError, runCommand } from "../run-command.ts";

const GenerateLine = z
  .object({
    id: z.union([z.string(), z.number()]).transform(String),
    prompt: z.string().optional(),
    prompt_ids: z.array(z.number().int().nonnegative()).min(1, "the prompt is empty").optional(),
    adapter: z.string().nullable().default(null),
    max_tokens: z.number().int().positive(),
    temperature: z.number().min(0).max(2).optional(),
    seed: z.number().int().optional(),
    /** As OpenAI's: text, JSON mode, or an instance of a JSON schema (worker/engine/json-schema.ts). */
    response_format: z
      .union([
        z.object({ type: z.enum(["text", "json_object"]) }),
        z.object({
          type: z.literal("json_schema"),
          json_schema: z
            .object({ schema: z.record(z.string(), z.unknown()), strict: z.boolean().nullable().optional() })
            .loose(),
        }),
      ])
      .optional(),
  })
  .strict()
  .refine((l) => (l.prompt === undefined) !== (l.prompt_ids === undefined), {
    message: 'give exactly one of "prompt" and "prompt_ids"',
  });

/** A line as read, with the schema its output follows compiled (none: text). */
type Line = z.infer<typeof GenerateLine> & { json?: SchemaNode };

/** Sequences generating at once (the CUDA engine holds a KV cache row for each). */
const MAX_BATCH = 64;

function readLines(file: string): Line[] {
  // A leading byte order mark (Windows editors and PowerShell write one) is no part of the first line.
  const lines = readFileSync(file, "utf8")
    .replace(/^\uFEFF/, "")
    .split("\n");
  const parsed: Line[] = [];
  lines.forEach((text, i) => {
    if (text.trim() === "") return;
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (error) {
      throw new Error(`${file}:${i + 1}: not JSON (${(error as Error).message})`);
    }
    const result = GenerateLine.safeParse(json);
    if (!result.success) {
      const issue = result.error.issues[0]!;
      throw new Error(`${file}:${i + 1}: ${issue.path.join(".") || "line"}: ${issue.message}`);
    }
    const format = result.data.response_format;
    let schema: SchemaNode | undefined;
    try {
      if (format?.type === "json_object") schema = ANY_OBJECT;
      if (format?.type === "json_schema") {
        // As the API reads it: a schema that is not strict leaves out what only narrows values.
        schema = compileJsonSchema(schemaAsRead(format.json_schema.schema, format.json_schema.strict));
      }
    } catch (error) {
      throw new Error(`${file}:${i + 1}: response_format.json_schema.${(error as Error).message}`);
    }
    parsed.push({ ...result.data, ...(schema ? { json: schema } : {}) });
  });
  if (parsed.length === 0) throw new Error(`${file}: no requests`);
  return parsed;
}

interface GenerateFlags {
  model: string;
  batch: string;
  device: string;
  maxContext: string;
  stepTokens: string;
  prefixCacheBytes: string;
  quantize?: string;
}

async function generate(flags: GenerateFlags): Promise<void> {
  const device = parseDevice(flags.device);
  const askedContext = count("--max-context", flags.maxContext, 2);
  const stepTokens = count("--step-tokens", flags.stepTokens);
  const prefixCacheBytes = bytes("--prefix-cache-bytes", flags.prefixCacheBytes);
  const lines = readLines(flags.batch);
  const modelDir = resolve(flags.model);
  const tokenizer = loadTokenizer(modelDir);
  const model = loadModelConfig(modelDir);
  // Never past the positions the model was built for (max_position_embeddings; Mistral's sliding_window).
  const maxContext = Math.min(askedContext, model.maxPositions);
  const contextSource = maxContext < askedContext ? MODEL_CONTEXT : "--max-context";
  const prompts = lines.map(
    (line) => line.prompt_ids ?? tokenizer.encode(line.prompt!, { addSpecialTokens: true }),
  );
  for (const [i, prompt] of prompts.entries()) {
    const outside = prompt.find((id) => id >= model.vocabSize);
    if (outside !== undefined) {
      throw new CliError(
        `request ${lines[i]!.id}: prompt_ids holds ${outside}, outside the model's vocabulary of ${model.vocabSize} tokens`,
      );
    }
    if (prompt.length >= maxContext) {
      throw new CliError(
        `request ${lines[i]!.id}: its prompt has ${prompt.length} tokens and leaves no room in the ${maxContext}-token context (${contextSource})`,
      );
    }
  }
  // The engine's slots and rank follow the adapters the file names: one slot each, all resident.
  const folders = [...new Set(lines.map((l) => l.adapter).filter((a): a is string => a !== null))];
  const adapters = folders.map((dir) => {
    try {
      return loadPeftAdapter(resolve(dir), model, { maxRank: 256 });
    } catch (error) {
      const first = lines.find((line) => line.adapter === dir)!;
      throw new CliError(`request ${first.id}: adapter ${dir}: ${(error as Error).message}`);
    }
  });
  const resident = new ResidentAdapters(
    adapters.map((adapter, i) => ({
      name: folders[i]!,
      blob_key: folders[i]!,
      sha256: adapter.sha256,
      rank: adapter.maxRank,
    })),
  );
  const maxAdapters = Math.min(64, Math.max(1, adapters.length));
  const engine = await EngineThread.start({
    modelDir,
    device,
    maxContext,
    slots: Math.max(1, adapters.length),
    maxRank: Math.max(1, ...adapters.map((a) => a.maxRank)),
    maxAdaptersPerStep: maxAdapters,
    maxBatch: MAX_BATCH,
    stepTokens,
    prefixCacheBytes,
    ...(flags.quantize ? { quantize: quantize(flags.quantize) } : {}),
  });
  const bar = new SingleBar({ format: "generate [{bar}] {value}/{total} requests", stream: process.stderr });
  try {
    // Every graph variant built before any request runs, as a worker does at start: weights that do not
    // match the config fail here, once, not as one error line per request at its first prefill.
    await engine.warmUp();
    for (const [i, adapter] of adapters.entries()) await engine.writeAdapter(i + 1, adapter);
    // The worker's own batching: prompts longer than a step's budget go in chunks, and a prompt that starts
    // like an earlier one on the same adapter prefills only the rest.
    const scheduler = new Scheduler(engine, tokenizer, resident, {
      maxBatch: MAX_BATCH,
      maxContext,
      stepTokenBudget: stepTokens,
      maxAdaptersPerStep: maxAdapters,
    });
    if (process.stderr.isTTY) bar.start(lines.length, 0);
    const started = performance.now();
    const outcomes = await Promise.all(
      lines.map((line, i) =>
        scheduler
          .submit({
            id: `${i}`,
            org: "local",
            adapter: line.adapter === null ? null : resident.ref(folders.indexOf(line.adapter) + 1),
            promptTokens: prompts[i]!,
            sampling: { ...GREEDY, temperature: line.temperature ?? 0, seed: line.seed ?? null },
            limits: { maxTokens: line.max_tokens, ...(line.json ? { json: line.json } : {}) },
          })
          .finally(() => bar.increment()),
      ),
    );
    const seconds = (performance.now() - started) / 1000;
    bar.stop();
    // Every request gets its line, a failed one with its error, so one failure loses no other output.
    const failed: string[] = [];
    const totals = { prompt: 0, cached: 0, generated: 0 };
    for (const [i, outcome] of outcomes.entries()) {
      const id = lines[i]!.id;
      if (outcome.kind !== "done") throw new CliError(`request ${id} was handed back unrun`);
      if (outcome.error) failed.push(id);
      totals.prompt += outcome.promptTokens;
      totals.cached += outcome.cachedPromptTokens;
      totals.generated += outcome.tokens.length;
      const line = {
        id,
        token_ids: outcome.tokens.map((t) => t.token),
        text: outcome.text,
        finish_reason: outcome.finishReason,
        ...(outcome.error ? { error: outcome.error.message } : {}),
      };
      process.stdout.write(`${JSON.stringify(line)}\n`);
    }
    process.stderr.write(
      `generate: ${lines.length} requests in ${seconds.toFixed(1)} s, ${totals.generated} tokens generated (${Math.round(totals.generated / seconds)}/s), ${totals.prompt} prompt tokens (${totals.cached} from the prefix cache)\n`,
    );
    if (failed.length > 0) throw new CliError(`${failed.length} request(s) failed: ${failed.join(", ")}`);
  } finally {
    bar.stop();
    await engine.close();
  }
}

export function registerGenerate(program: Command): void {
  const command = program
    .command("generate")
    .description("run every line of a JSONL file together as one mixed-adapter workload")
    .requiredOption("--model <dir>", "Hugging Face model folder")
    .requiredOption(
      "--batch <file>",
      'JSONL: {"id", "prompt" | "prompt_ids", "adapter", "max_tokens", "temperature"?, "seed"?, "response_format"?}',
    )
    .option("--device <device>", "cpu | webgpu | cuda", "cpu")
    .option(
      "--max-context <n>",
      "longest sequence, prompt + generated (at most the model's own context)",
      "1024",
    )
    .option("--quantize <q4>", QUANTIZE_HELP);
  batchingOptions(command, "256MiB").action((flags: GenerateFlags) =>
    runCommand("generate", () => generate(flags)),
  );
}
