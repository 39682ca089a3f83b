// `luminet bench cold-load`: time from acquire() to a usable slot for a bench-1b rank-16 all-module adapter,
// from each tier — host RAM, local disk (page cache dropped, and warm), the blob store (a local folder) —
// and whether a running decode step slows down while loads are in flight (../shared/BENCH.md "cold-load").
// The engine runs in its thread as in the worker; every load goes through the AdapterManager.
import { type ChildProcessWithoutNullStreams, execFileSync, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { cpSync, existsSync, readFileSync, rmSync, statSync } from "node:fs";
import { availableParallelism, loadavg } from "node:os";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { pathToFileURL } from "node:url";
import type { AdapterRef } from "../schema/wire.ts";
import {
  AdapterManager,
  type AdapterManagerOptions,
  type LoadTier,
} from "../worker/adapters/adapter-manager.ts";
import { FolderBlobStore } from "../worker/adapters/blob-store.ts";
import { loadPeftAdapter } from "../worker/adapters/peft.ts";
import { PeftThread } from "../worker/adapters/peft-thread.ts";
import { parsedBytes } from "../worker/adapters/ram-cache.ts";
import { EngineThread } from "../worker/engine/engine-thread.ts";
import { Prng } from "../worker/engine/prng.ts";
import { machineName } from "./bench-engine.ts";
import { saveBenchResult } from "./bench-result.ts";
import { round } from "./bench-stats.ts";
import { initTinyModel } from "./tiny-model.ts";

export interface ColdLoadBenchOptions {
  layers?: number;
  /** A bench-1b folder with adapters/adapter-0..2; generated (and cached, shared with bench engine) when absent. */
  modelDir?: string;
  repeats?: number;
  log?: (line: string) => void;
}

export interface TierTiming {
  tier: "ram" | "disk" | "disk-page-cached" | "blob";
  /** acquire() to usable, median and best over the repeats. */
  ms_p50: number;
  ms_min: number;
  /** Adapter file bytes over the median time. */
  gb_per_s: number;
  /** Of that: bringing it into RAM parsed (fetch, sha256, parse); null from RAM. */
  to_ram_ms_p50: number | null;
  /** Of that: the write into the engine's slot. */
  write_ms_p50: number;
}

export interface ColdLoadBenchResult {
  bench: "cold-load";
  machine: string;
  device: "cpu";
  shape: "bench-1b";
  layers: number;
  dtype: "F32";
  rank: number;
  adapter_bytes: number;
  parsed_bytes: number;
  repeats: number;
  storage: string;
  /** The machine's 1-minute load average at the start and the end: other processes share its cores. */
  load_average: [number, number];
  page_cache: string;
  tiers: TierTiming[];
  /**
   * Decode step times, quiet and while cold loads from the blob store run back to back: loads brought
   * to RAM only (fetch, sha256, parse), and whole loads whose slot write the engine runs between steps.
   * Ratios are p50 over the quiet p50.
   */
  step: {
    sequences: number;
    engine_threads: number;
    steps_each: number;
    quiet_ms_p50: number;
    quiet_ms_p90: number;
    to_ram_ms_p50: number;
    to_ram_ms_p90: number;
    to_ram_ratio: number;
    to_ram_loads: number;
    to_slot_ms_p50: number;
    to_slot_ms_p90: number;
    to_slot_ratio: number;
    to_slot_loads: number;
  };
  notes: string[];
}

const RANK = 16;
const SEQUENCES = 16;
const PROMPT = 32;
/** Steps per phase per round; phases rotate so machine noise falls on all of them alike. */
const BLOCK = 2;
const ROUNDS = 14;
/** The bank slot the decoding sequences' adapter sits in; the managers use the slots below it. */
const DECODE_SLOT = 4;

function quantile(values: number[], q: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

function ensureModel(layers: number, log: (line: string) => void): string {
  // The engine bench's folder and generator settings, so the two share one generated model.
  const dir = resolve(".luminet", "bench-models", `bench-1b-${layers}l-f32`);
  if (existsSync(join(dir, "adapters", "adapter-63", "adapter_model.safetensors"))) return dir;
  log(`generating bench-1b (${layers} layers, F32) with 64 rank-${RANK} adapters in ${dir}`);
  initTinyModel(dir, { shape: "bench-1b", layers, adapters: 64, rank: RANK, seed: 7, dtype: "F32" });
  return dir;
}

/**
 * Drops files' pages from the page cache through a shell started once: dd's nocache flags call
 * posix_fadvise(DONTNEED), which Node does not expose (nor O_DIRECT reads into aligned memory); dirty pages
 * are written back first. Not a child process per drop: forking this process marks all its memory
 * copy-on-write, so the load timed next would pay a page fault for every page it writes (measured on a VM:
 * 25 ms of a 5.6 MB slot write, 20 ms of its parse) and time the fork instead of the disk.
 */
class PageCacheDropper {
  readonly #shell: ChildProcessWithoutNullStreams;
  readonly #lines: AsyncIterator<string>;

  constructor() {
    // One line out per path in: the bytes fincore still finds resident, or "none" where a tool failed.
    const script =
      'while IFS= read -r p; do dd of="$p" oflag=nocache conv=notrunc,fdatasync count=0 status=none ' +
      '&& dd if="$p" iflag=nocache count=0 status=none ' +
      '&& fincore --bytes --noheadings --output RES "$p" 2>/dev/null || echo none; done';
    this.#shell = spawn("sh", ["-c", script]);
    this.#lines = createInterface({ input: this.#shell.stdout })[Symbol.asyncIterator]();
  }

  /** Drops `path`'s pages; the bytes still resident after, or null where the tools are missing. */
  async drop(path: string): Promise<number | null> {
    this.#shell.stdin.write(`${path}\n`);
    const { value } = await this.#lines.next();
    const resident = Number(value?.trim());
    return Number.isFinite(resident) ? resident : null;
  }

  close(): void {
    this.#shell.stdin.end();
  }
}

function storageOf(path: string): string {
  try {
    const line = execFileSync("df", ["-T", path], { encoding: "utf8" }).trim().split("\n")[1] ?? "";
    const [source, type] = line.split(/\s+/);
    return `${source} (${type})`;
  } catch {
    return "unknown";
  }
}

export async function runColdLoadBench(options: ColdLoadBenchOptions = {}): Promise<ColdLoadBenchResult> {
  const log = options.log ?? (() => {});
  const layers = options.layers ?? 2;
  const repeats = options.repeats ?? 15;
  const modelDir = options.modelDir ?? ensureModel(layers, log);
  const loadAtStart = loadavg()[0]!;
  const work = resolve(".luminet", "bench-cold-load");
  // Started before the engine and the loads allocate: its one fork copies little.
  const dropper = new PageCacheDropper();
  rmSync(work, { recursive: true, force: true });

  // Three adapters in a folder blob store: two to alternate between, one for the decoding batch.
  const refs: AdapterRef[] = [];
  for (let i = 0; i < 3; i++) {
    const key = `bench/adapter-${i}/v1`;
    cpSync(join(modelDir, "adapters", `adapter-${i}`), join(work, "blobs", key), { recursive: true });
    const weights = readFileSync(join(work, "blobs", key, "adapter_model.safetensors"));
    refs.push({
      name: `bench/adapter-${i}`,
      blob_key: key,
      sha256: createHash("sha256").update(weights).digest("hex"),
      rank: RANK,
    });
  }
  const blobs = new FolderBlobStore(join(work, "blobs"));
  const adapterBytes = statSync(join(work, "blobs", refs[0]!.blob_key, "adapter_model.safetensors")).size;

  const engineThreads = Math.max(1, availableParallelism() - 1);
  log(`starting the engine thread (${engineThreads} ORT threads) and building graph variants`);
  const engine = await EngineThread.start({
    modelDir,
    device: "cpu",
    maxContext: 128,
    slots: DECODE_SLOT,
    maxRank: RANK,
    maxAdaptersPerStep: 4,
    threads: engineThreads,
  });
  await engine.warmUp();
  const model = engine.model;
  const parser = new PeftThread(model, RANK);
  await parser.started();
  const parsed = loadPeftAdapter(join(work, "blobs", refs[2]!.blob_key), model, { maxRank: RANK });
  await engine.writeAdapter(DECODE_SLOT, parsed);

  let managers = 0;
  const observed: { tier: LoadTier; seconds: number }[] = [];
  const manager = (overrides: Partial<AdapterManagerOptions>) =>
    new AdapterManager({
      model,
      maxRank: RANK,
      slots: 1,
      writeSlot: (slot, adapter) => engine.writeAdapter(slot, adapter),
      clearSlot: (slot) => engine.clearSlot(slot),
      ramCacheBytes: 1e10,
      diskCacheDir: join(work, `disk-${managers++}`),
      diskCacheBytes: 1e11,
      blobs,
      parser,
      onLoad: (tier, seconds) => observed.push({ tier, seconds }),
      ...overrides,
    });

  const residentAfterDrop: number[] = [];
  /** Times `repeats` acquires alternating between adapters 0 and 1, after `prepare` for each. */
  const timeTier = async (
    tier: TierTiming["tier"],
    m: AdapterManager,
    prepare: (ref: AdapterRef) => Promise<void>,
  ): Promise<TierTiming> => {
    for (const ref of refs.slice(0, 2)) {
      await m.acquire(ref);
      m.release(ref);
    }
    const times: number[] = [];
    const toRam: number[] = [];
    const writes: number[] = [];
    for (let i = 0; i < repeats; i++) {
      const ref = refs[i % 2]!;
      await prepare(ref);
      observed.length = 0;
      const start = performance.now();
      await m.acquire(ref);
      times.push(performance.now() - start);
      m.release(ref);
      for (const o of observed) (o.tier === "ram" ? writes : toRam).push(o.seconds * 1000);
    }
    const p50 = quantile(times, 0.5);
    log(`  ${tier}: ${p50.toFixed(1)} ms p50`);
    return {
      tier,
      ms_p50: round(p50, 2),
      ms_min: round(Math.min(...times), 2),
      gb_per_s: round(adapterBytes / (p50 / 1000) / 1e9, 3),
      to_ram_ms_p50: toRam.length > 0 ? round(quantile(toRam, 0.5), 2) : null,
      write_ms_p50: round(quantile(writes, 0.5), 2),
    };
  };

  log(`timing ${repeats} loads from each tier`);
  const tiers: TierTiming[] = [];
  const inRam = manager({});
  tiers.push(await timeTier("ram", inRam, async () => {}));
  // A RAM tier of 0 bytes sends every load back to the disk copy.
  const onDisk = manager({ ramCacheBytes: 0 });
  const diskDir = join(work, `disk-${managers - 1}`);
  tiers.push(
    await timeTier("disk", onDisk, async (ref) => {
      const resident = await dropper.drop(join(diskDir, ref.sha256, "adapter_model.safetensors"));
      if (resident !== null) residentAfterDrop.push(resident);
    }),
  );
  tiers.push(await timeTier("disk-page-cached", onDisk, async () => {}));
  const fromBlob = manager({});
  tiers.push(
    await timeTier("blob", fromBlob, async (ref) => {
      await fromBlob.remove(ref.name);
      const resident = await dropper.drop(join(work, "blobs", ref.blob_key, "adapter_model.safetensors"));
      if (resident !== null) residentAfterDrop.push(resident);
    }),
  );
  dropper.close();

  log(
    `decoding ${SEQUENCES} sequences, ${ROUNDS} rounds of ${BLOCK} steps per phase: quiet, loads to RAM, loads to a slot`,
  );
  const prng = new Prng(11, 0);
  const ids = Array.from({ length: SEQUENCES }, (_, i) => `seq-${i}`);
  let next = new Map<string, number>();
  for (const id of ids) {
    const tokens = Array.from({ length: PROMPT }, () => Math.floor(prng.nextFloat() * model.vocabSize));
    const [logits] = await engine.prefill(id, tokens, DECODE_SLOT);
    next.set(id, argmax(logits!));
  }
  const step = async (): Promise<number> => {
    const start = performance.now();
    const logits = await engine.decode(next);
    const ms = performance.now() - start;
    next = new Map([...logits].map(([id, row]) => [id, argmax(row)]));
    return ms;
  };
  await step();
  // Loads to RAM only: the same fetch, sha256 and parse, with a slot write that does nothing.
  const toRamOnly = manager({ writeSlot: async () => {} });
  const phases = [
    { loader: null, steps: [] as number[], loads: 0 },
    { loader: toRamOnly, steps: [] as number[], loads: 0 },
    { loader: fromBlob, steps: [] as number[], loads: 0 },
  ];
  for (let round = 0; round < ROUNDS; round++) {
    for (const phase of phases) {
      let running = true;
      const loader = (async () => {
        const m = phase.loader;
        for (let i = 0; m && running; i++) {
          const ref = refs[i % 2]!;
          await m.remove(ref.name);
          await m.acquire(ref);
          m.release(ref);
          phase.loads++;
        }
      })();
      for (let i = 0; i < BLOCK; i++) phase.steps.push(await step());
      running = false;
      await loader;
    }
  }
  for (const id of ids) await engine.release(id);

  await Promise.all([inRam, onDisk, fromBlob, toRamOnly].map((m) => m.close()));
  await parser.close();
  await engine.close();
  const storage = storageOf(work);
  rmSync(work, { recursive: true, force: true });

  const [quiet, toRam, toSlot] = phases;
  const p50 = (steps: number[]) => quantile(steps, 0.5);
  const pageCache =
    residentAfterDrop.length === 0
      ? "not dropped: dd or fincore is missing, so disk and blob timings read from the page cache"
      : `dropped per load with dd iflag=nocache (posix_fadvise DONTNEED; Node has neither fadvise nor aligned O_DIRECT buffers); fincore found at most ${Math.max(...residentAfterDrop)} of ${adapterBytes} bytes still cached`;
  return {
    bench: "cold-load",
    machine: machineName("cpu"),
    device: "cpu",
    shape: "bench-1b",
    layers,
    dtype: "F32",
    rank: RANK,
    adapter_bytes: adapterBytes,
    parsed_bytes: parsedBytes(parsed),
    repeats,
    storage,
    load_average: [round(loadAtStart, 2), round(loadavg()[0]!, 2)],
    page_cache: pageCache,
    tiers,
    step: {
      sequences: SEQUENCES,
      engine_threads: engineThreads,
      steps_each: quiet!.steps.length,
      quiet_ms_p50: round(p50(quiet!.steps), 2),
      quiet_ms_p90: round(quantile(quiet!.steps, 0.9), 2),
      to_ram_ms_p50: round(p50(toRam!.steps), 2),
      to_ram_ms_p90: round(quantile(toRam!.steps, 0.9), 2),
      to_ram_ratio: round(p50(toRam!.steps) / p50(quiet!.steps), 3),
      to_ram_loads: toRam!.loads,
      to_slot_ms_p50: round(p50(toSlot!.steps), 2),
      to_slot_ms_p90: round(quantile(toSlot!.steps, 0.9), 2),
      to_slot_ratio: round(p50(toSlot!.steps) / p50(quiet!.steps), 3),
      to_slot_loads: toSlot!.loads,
    },
    notes: [
      `bench-1b with ${layers} layers on CPU (the engine bench's CPU setting); an adapter's bytes grow with layers (16 layers: 8x)`,
      "each time runs from acquire() to the slot written through the engine thread, as in the worker; the blob store is a local folder",
      "disk is the local disk cache read with its pages dropped; disk-page-cached reads it from the page cache",
      `the engine ran ${engineThreads} ORT thread(s), leaving the other core(s) to loading; a load's CPU work (sha256, parse, copies) competes with the step only where cores are short: to-ram alongside to-slot tells contention from the slot write`,
      "step phases: loads run back to back from the blob store, the worst case; to-ram stops before the slot write, to-slot includes it (the engine thread runs it between two steps, so a step can wait for one write)",
    ],
  };
}

function argmax(row: Float32Array): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i]! > row[best]!) best = i;
  return best;
}

/** Prints the result (one JSON line with --json, else a table) and saves bench/results/cold-load.json. */
export function reportColdLoadBench(
  result: ColdLoadBenchResult,
  json: boolean,
  resultsDir = "bench/results",
): void {
  if (saveBenchResult("cold-load", result, json, resultsDir)) return;
  const mb = (result.adapter_bytes / 1e6).toFixed(1);
  process.stdout.write(
    `cold-load on ${result.machine}: bench-1b ${result.layers} layers, rank ${result.rank} on all 7 modules, ${mb} MB; storage ${result.storage}; load average ${result.load_average.join(" → ")}\n`,
  );
  process.stdout.write(`page cache: ${result.page_cache}\n`);
  process.stdout.write("tier               ms p50   ms min   GB/s    to RAM ms   write ms\n");
  for (const t of result.tiers) {
    process.stdout.write(
      `${t.tier.padEnd(19)}${t.ms_p50.toFixed(1).padEnd(9)}${t.ms_min.toFixed(1).padEnd(9)}${t.gb_per_s.toFixed(2).padEnd(8)}${(t.to_ram_ms_p50?.toFixed(1) ?? "-").padEnd(12)}${t.write_ms_p50.toFixed(1)}\n`,
    );
  }
  const s = result.step;
  process.stdout.write(
    `decode step, ${s.sequences} sequences, ms p50: ${s.quiet_ms_p50.toFixed(1)} quiet; ${s.to_ram_ms_p50.toFixed(1)} (x${s.to_ram_ratio.toFixed(2)}) during ${s.to_ram_loads} loads to RAM; ${s.to_slot_ms_p50.toFixed(1)} (x${s.to_slot_ratio.toFixed(2)}) during ${s.to_slot_loads} loads to a slot\n`,
  );
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  const args = process.argv.slice(2);
  const value = (flag: string) => {
    const at = args.indexOf(flag);
    return at >= 0 ? args[at + 1] : undefined;
  };
  const result = await runColdLoadBench({
    ...(value("--layers") ? { layers: Number(value("--layers")) } : {}),
    ...(value("--model") ? { modelDir: resolve(value("--model")!) } : {}),
    log: (line) => process.stderr.write(`[${(performance.now() / 1000).toFixed(1)}s] ${line}\n`),
  });
  reportColdLoadBench(result, args.includes("--json"));
}
