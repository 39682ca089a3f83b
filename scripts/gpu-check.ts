// The GPU engine against the CPU engine, run on a GPU machine beside the benchmark: a mixed batch of
// eight adapters on the tiny model, the same teacher-forced tokens on both devices; reports the largest
// logit difference (fp16 against fp32), whether greedy picks agree (the argmax of the GPU's logit rows,
// and the picks its graph takes itself), and whether each sequence's greedy tokens are the same alone and
// inside the mixed batch on the GPU.
// node gpu-check.mjs --device webgpu [--out DIR]   (writes DIR/gpu-check-<device>.json); CPU-only hosts: --device cpu
// compares the CPU engine with itself, which keeps the script honest where no GPU is at hand.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadPeftAdapter } from "../worker/adapters/peft.ts";
import type { DecodeChoice } from "../worker/engine/decode-row.ts";
import { type Device, parseDevice } from "../worker/engine/device.ts";
import { Engine } from "../worker/engine/engine.ts";
import { GREEDY } from "../worker/engine/sampler.ts";
import { loadTokenizer } from "../worker/engine/tokenizer.ts";
import { type Generated, SlotGeneration } from "./slot-generation.ts";
import { initTinyModel } from "./tiny-model.ts";

const ADAPTERS = 8;
const SEQUENCES = 10;
const STEPS = 6;

function argmax(row: Float32Array): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i]! > row[best]!) best = i;
  return best;
}

async function traceLogits(engine: Engine, prompts: number[][], slots: number[], feed: number[][]) {
  const out: Float32Array[][] = prompts.map(() => []);
  for (const [i, tokens] of prompts.entries())
    out[i]!.push((await engine.prefill(`s${i}`, tokens, slots[i]!))[0]!.slice());
  for (let step = 0; step < STEPS; step++) {
    const rows = await engine.decode(new Map(prompts.map((_, i) => [`s${i}`, feed[i]![step]!])));
    for (const [i] of prompts.entries()) out[i]!.push(rows.get(`s${i}`)!.slice());
  }
  for (const [i] of prompts.entries()) engine.release(`s${i}`);
  return out;
}

/** The same teacher-forced decode steps as traceLogits, each row's argmax taken in the graph (picks). */
async function tracePicks(engine: Engine, prompts: number[][], slots: number[], feed: number[][]) {
  const out: number[][] = prompts.map(() => []);
  for (const [i, tokens] of prompts.entries()) await engine.prefill(`s${i}`, tokens, slots[i]!);
  const greedy = new Map<string, DecodeChoice>(prompts.map((_, i) => [`s${i}`, { kind: "argmax" }]));
  for (let step = 0; step < STEPS; step++) {
    const rows = await engine.decodePicking(
      new Map(prompts.map((_, i) => [`s${i}`, feed[i]![step]!])),
      greedy,
    );
    for (const [i] of prompts.entries()) out[i]!.push(rows.get(`s${i}`) as number);
  }
  for (const [i] of prompts.entries()) engine.release(`s${i}`);
  return out;
}

export async function runGpuCheck(device: Device) {
  const root = mkdtempSync(join(tmpdir(), "luminet-gpu-check-"));
  try {
    const tiny = initTinyModel(join(root, "model"), { shape: "tiny", adapters: ADAPTERS, rank: 8, seed: 3 });
    const options = {
      modelDir: tiny.dir,
      maxContext: 128,
      slots: ADAPTERS,
      maxRank: 8,
      maxAdaptersPerStep: 16,
    };
    const cpu = await Engine.create({ ...options, device: "cpu" });
    const gpu = await Engine.create({ ...options, device });
    for (let i = 0; i < ADAPTERS; i++) {
      const adapter = loadPeftAdapter(tiny.adapterDirs[i]!, tiny.config, { maxRank: 8 });
      await cpu.writeAdapter(i + 1, adapter);
      await gpu.writeAdapter(i + 1, adapter);
    }
    const prompts = Array.from({ length: SEQUENCES }, (_, i) =>
      Array.from({ length: 4 + i }, (_, t) => (13 * i + 7 * t + 2) % tiny.config.vocabSize),
    );
    const slots = prompts.map((_, i) => i % (ADAPTERS + 1));
    const feed = prompts.map((_, i) =>
      Array.from({ length: STEPS }, (_, t) => (29 * i + 3 * t + 5) % tiny.config.vocabSize),
    );
    const expected = await traceLogits(cpu, prompts, slots, feed);
    const actual = await traceLogits(gpu, prompts, slots, feed);
    const graphPicks = await tracePicks(gpu, prompts, slots, feed);
    let maxAbs = 0;
    let maxLogit = 0;
    let picks = 0;
    let agree = 0;
    let graphAgree = 0;
    for (const [i, rows] of actual.entries()) {
      for (const [step, row] of rows.entries()) {
        const ref = expected[i]![step]!;
        for (let v = 0; v < row.length; v++) {
          maxAbs = Math.max(maxAbs, Math.abs(row[v]! - ref[v]!));
          maxLogit = Math.max(maxLogit, Math.abs(ref[v]!));
        }
        picks++;
        if (argmax(row) === argmax(ref)) agree++;
        // Decode steps only (a prefill returns its row): the graph's own pick against the CPU's argmax.
        if (step > 0 && graphPicks[i]![step - 1] === argmax(ref)) graphAgree++;
      }
    }

    // Greedy generation on the GPU: each sequence alone, then all of them in one continuous batch.
    const tokenizer = loadTokenizer(tiny.dir);
    const generationOptions = { slots: ADAPTERS, maxBatch: 64, maxContext: 128, stepTokens: 4096 };
    const request = (i: number) => ({
      id: `g${i}`,
      promptTokens: prompts[i]!,
      slot: slots[i]!,
      sampling: GREEDY,
      maxTokens: 12,
      stopTokenIds: [],
    });
    const alone: Generated[] = [];
    for (let i = 0; i < SEQUENCES; i++)
      alone.push(await new SlotGeneration(gpu, tokenizer, generationOptions).generate(request(i)));
    const generation = new SlotGeneration(gpu, tokenizer, generationOptions);
    const together = await Promise.all(prompts.map((_, i) => generation.generate(request(i))));
    const sameTokens = together.filter((r, i) => r.tokenIds.join() === alone[i]!.tokenIds.join()).length;
    await cpu.close();
    await gpu.close();
    return {
      device,
      model: "tiny (2 layers, hidden 64), 8 rank-8 adapters + base rows, 10 ragged sequences",
      logits: { max_abs_diff: maxAbs, max_abs_logit: maxLogit, relative: maxAbs / maxLogit },
      greedy_pick_agreement: `${agree}/${picks}`,
      graph_pick_agreement: `${graphAgree}/${SEQUENCES * STEPS}`,
      greedy_alone_vs_batch_same: `${sameTokens}/${SEQUENCES}`,
    };
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

const args = process.argv.slice(2);
const flag = (name: string) => {
  const at = args.indexOf(name);
  return at >= 0 ? args[at + 1] : undefined;
};
const result = await runGpuCheck(parseDevice(flag("--device") ?? "webgpu"));
const out = flag("--out") ?? "bench/results";
mkdirSync(out, { recursive: true });
writeFileSync(join(out, `gpu-check-${result.device}.json`), `${JSON.stringify(result, null, 2)}\n`);
process.stdout.write(`${JSON.stringify(result)}\n`);
