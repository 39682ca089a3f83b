// `luminet generate`: every line of a JSONL file runs together as one continuously batched, mixed-adapter
// workload on the engine; one output line per request, in input order.
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { SingleBar } from "cli-progress";
import type { Command } from "commander";
import { z } from "zod";
import { loadPeftAdapter } from "../../worker/adapters/peft.ts";
import { parseDevice } from "../../worker/engine/device.ts";
import { EngineThread } from "../../worker/engine/engine-thread.ts";
import { ContinuousBatcher } from "../../worker/engine/generation.ts";
import { loadModelConfig } from "../../worker/engine/model-config.ts";
import { GREEDY } from "../../worker/engine/sampler.ts";
import { loadTokenizer } from "../../worker/engine/tokenizer.ts";

const GenerateLine = z
  .object({
    id: z.union([z.string(), z.number()]).transform(String),
    prompt: z.string().optional(),
    prompt_ids: z.array(z.number().int().nonnegative()).optional(),
    adapter: z.string().nullable().default(null),
    max_tokens: z.number().int().positive(),
    temperature: z.number().min(0).max(2).optional(),
    seed: z.number().int().optional(),
  })
  .strict()
  .refine((l) => (l.prompt === undefined) !== (l.prompt_ids === undefined), {
    message: 'give exactly one of "prompt" and "prompt_ids"',
  });

type Line = z.infer<typeof GenerateLine>;

/** Sequences generating at once (the CUDA engine holds a KV cache row for each). */
const MAX_BATCH = 64;

function readLines(file: string): Line[] {
  const lines = readFileSync(file, "utf8").split("\n");
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
    parsed.push(result.data);
  });
  if (parsed.length === 0) throw new Error(`${file}: no requests`);
  return parsed;
}

async function generate(options: {
  model: string;
  batch: string;
  device: string;
  maxContext: string;
}): Promise<void> {
  const device = parseDevice(options.device);
  const lines = readLines(options.batch);
  const modelDir = resolve(options.model);
  const tokenizer = loadTokenizer(modelDir);
  const model = loadModelConfig(modelDir);
  // The engine's slots and rank follow the adapters the file names: one slot each, all resident.
  const folders = [...new Set(lines.map((l) => l.adapter).filter((a): a is string => a !== null))];
  const adapters = folders.map((dir) => loadPeftAdapter(resolve(dir), model, { maxRank: 256 }));
  const slotOf = new Map(folders.map((dir, i) => [dir, i + 1]));
  const maxContext = Number(options.maxContext);
  const engine = await EngineThread.start({
    modelDir,
    device,
    maxContext,
    slots: Math.max(1, adapters.length),
    maxRank: Math.max(1, ...adapters.map((a) => a.maxRank)),
    maxAdaptersPerStep: Math.min(64, Math.max(1, adapters.length)),
    maxBatch: MAX_BATCH,
  });
  for (const [i, adapter] of adapters.entries()) await engine.writeAdapter(i + 1, adapter);
  const batcher = new ContinuousBatcher(engine, tokenizer, {
    maxBatch: MAX_BATCH,
    maxContext,
    prefillTokenBudget: 4096,
  });
  const bar = new SingleBar({ format: "generate [{bar}] {value}/{total} requests", stream: process.stderr });
  if (process.stderr.isTTY) bar.start(lines.length, 0);
  try {
    const results = await Promise.all(
      lines.map((line) =>
        batcher
          .submit({
            id: line.id,
            promptTokens: line.prompt_ids ?? tokenizer.encode(line.prompt!, { addSpecialTokens: true }),
            slot: line.adapter === null ? 0 : slotOf.get(line.adapter)!,
            sampling: { ...GREEDY, temperature: line.temperature ?? 0, seed: line.seed ?? null },
            maxTokens: line.max_tokens,
          })
          .finally(() => bar.increment()),
      ),
    );
    bar.stop();
    for (const r of results) {
      process.stdout.write(
        `${JSON.stringify({ id: r.id, token_ids: r.tokenIds, text: r.text, finish_reason: r.finishReason })}\n`,
      );
    }
  } finally {
    bar.stop();
    await engine.close();
  }
}

export function registerGenerate(program: Command): void {
  program
    .command("generate")
    .description("run every line of a JSONL file together as one mixed-adapter workload")
    .requiredOption("--model <dir>", "Hugging Face model folder")
    .requiredOption(
      "--batch <file>",
      'JSONL: {"id", "prompt" | "prompt_ids", "adapter", "max_tokens", "temperature"?, "seed"?}',
    )
    .option("--device <device>", "cpu | webgpu | cuda", "cpu")
    .option("--max-context <n>", "longest sequence, prompt + generated", "1024")
    .action(generate);
}
