// `luminet model ...`: model tools.
import { readdirSync, statSync } from "node:fs";
import cliProgress from "cli-progress";
import { type Command, InvalidArgumentError, Option } from "commander";
import {
  initTinyModel,
  TINY_ARCHITECTURES,
  TINY_SHAPES,
  type TinyArchitecture,
  type TinyShape,
} from "../../scripts/tiny-model.ts";
import type { FloatDtype } from "../../worker/engine/dtype.ts";

const DTYPES: Record<string, FloatDtype> = { f32: "F32", f16: "F16", bf16: "BF16" };
const ARCHITECTURE_NAMES: Record<TinyArchitecture, string> = {
  llama: "Llama",
  qwen2: "Qwen2",
  qwen3: "Qwen3",
};

function integer(min: number): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (!/^\d+$/.test(value) || !Number.isSafeInteger(n) || n < min) {
      throw new InvalidArgumentError(`expected an integer ≥ ${min}`);
    }
    return n;
  };
}

function shape(value: string): TinyShape {
  if (!(TINY_SHAPES as readonly string[]).includes(value)) {
    throw new InvalidArgumentError(`expected one of ${TINY_SHAPES.join(", ")}`);
  }
  return value as TinyShape;
}

function architecture(value: string): TinyArchitecture {
  if (!(TINY_ARCHITECTURES as readonly string[]).includes(value)) {
    throw new InvalidArgumentError(`expected one of ${TINY_ARCHITECTURES.join(", ")}`);
  }
  return value as TinyArchitecture;
}

function dtype(value: string): FloatDtype {
  const d = DTYPES[value.toLowerCase()];
  if (!d) throw new InvalidArgumentError(`expected one of ${Object.keys(DTYPES).join(", ")}`);
  return d;
}

interface InitTinyFlags {
  shape: TinyShape;
  arch: TinyArchitecture;
  layers?: number;
  adapters: number;
  rank: number;
  seed: number;
  dtype: FloatDtype;
}

/** The files of an earlier model (adapters, shards, an index) would sit beside the new ones unnoticed. */
function assertNewOrEmpty(dir: string): void {
  const stat = statSync(dir, { throwIfNoEntry: false });
  if (stat?.isDirectory() && readdirSync(dir).length > 0) {
    throw new Error(`${dir} is not empty: give a new or empty folder (or remove this one first)`);
  }
}

function initTiny(dir: string, flags: InitTinyFlags): void {
  assertNewOrEmpty(dir);
  const bar =
    flags.shape === "bench-1b"
      ? new cliProgress.SingleBar(
          { stream: process.stderr, format: "weights [{bar}] {percentage}% {value}/{total} MB" },
          cliProgress.Presets.shades_classic,
        )
      : null;
  let started = false;
  const model = initTinyModel(dir, {
    shape: flags.shape,
    architecture: flags.arch,
    layers: flags.layers,
    adapters: flags.adapters,
    rank: flags.rank,
    seed: flags.seed,
    dtype: flags.dtype,
    onProgress: (done, total) => {
      if (!bar) return;
      const mb = (n: number) => Math.round(n / 2 ** 20);
      if (!started) {
        bar.start(mb(total), 0);
        started = true;
      }
      bar.update(mb(done));
    },
  });
  bar?.stop();
  const c = model.config;
  process.stdout.write(
    `wrote ${model.dir}: ${flags.shape} ${ARCHITECTURE_NAMES[flags.arch]}, ${c.numLayers} layers, hidden ${c.hiddenSize}, vocab ${c.vocabSize}, ` +
      `${(model.parameters / 1e6).toFixed(1)}M parameters (${(model.weightBytes / 2 ** 20).toFixed(1)} MiB ${c.dtype}), ` +
      `${model.adapterDirs.length} adapters of rank ${flags.rank}\n`,
  );
}

export function registerModel(program: Command): void {
  const model = program.command("model").description("model tools");
  model
    .command("init-tiny <dir>")
    .description(
      "write a random-weight Llama in Hugging Face layout, with PEFT adapters under DIR/adapters/ (DIR new or empty)",
    )
    .option("--shape <shape>", "tiny | bench-1b", shape, "tiny" as TinyShape)
    .option(
      "--arch <arch>",
      "llama | qwen2 (q/k/v biases) | qwen3 (q/k norms)",
      architecture,
      "llama" as TinyArchitecture,
    )
    .option("--layers <n>", "number of layers (default 2)", integer(1))
    .option("--adapters <n>", "number of PEFT adapters", integer(0), 0)
    .option("--rank <r>", "adapter rank", integer(1), 8)
    .option("--seed <s>", "random seed", integer(0), 0)
    .addOption(new Option("--dtype <dtype>", "f32 | f16 | bf16").argParser(dtype).default("F32", "f32"))
    .action((dir: string, flags: InitTinyFlags) => {
      try {
        initTiny(dir, flags);
      } catch (err) {
        process.stderr.write(`luminet model init-tiny: ${(err as Error).message}\n`);
        process.exitCode = 1;
      }
    });
}
