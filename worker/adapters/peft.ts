// Loading a PEFT LoRA adapter folder (adapter_config.json + adapter_model.safetensors) into float32
// A and scaled Bᵀ matrices per module, validated against the base model and refused where a weight, or
// one scaled, is not a finite float32. Pickled weights are never opened: unpickling runs arbitrary code.
import { createHash } from "node:crypto";
import { closeSync, existsSync, fstatSync, openSync, readFileSync, statSync } from "node:fs";
import { basename, join, resolve } from "node:path";
import {
  MODULE_KINDS,
  type ModelConfig,
  type ModuleKind,
  modulePath,
  moduleShape,
} from "../engine/model-config.ts";
import { readFully, SafetensorsError, type WeightIndex, weightsInMemory } from "../engine/safetensors.ts";
import { AdapterError, isTargeted, moduleRank, moduleScale, parsePeftConfig } from "./peft-config.ts";

export { AdapterError } from "./peft-config.ts";

export interface LoraModule {
  layer: number;
  kind: ModuleKind;
  rank: number;
  /** alpha/r, or alpha/sqrt(r) with rsLoRA, from alpha_pattern/rank_pattern where they match. */
  scale: number;
  /** lora_A: [rank, inFeatures] row-major. */
  a: Float32Array;
  /** scale · lora_Bᵀ: [rank, outFeatures] row-major — the rows a LoRA bank holds, so a slot write copies. */
  scaledBT: Float32Array;
  /** scale · lora_B's bias [outFeatures] (lora_bias = true). */
  scaledBias: Float32Array | null;
  inFeatures: number;
  outFeatures: number;
}

/**
 * A parsed adapter, in the layout the engine's banks hold. Its matrices are views of one SharedArrayBuffer
 * of their exact size: the RAM tier keeps one copy, and handing it to the engine thread (a structured
 * clone) copies nothing.
 */
export interface LoadedAdapter {
  name: string;
  /** The largest rank among the adapter's modules. */
  maxRank: number;
  modules: LoraModule[];
  /** Size of adapter_model.safetensors. */
  bytes: number;
  /** sha256 (hex) of adapter_model.safetensors. */
  sha256: string;
}

const CONFIG_FILE = "adapter_config.json";
const WEIGHTS_FILE = "adapter_model.safetensors";
const PICKLE_FILES = ["adapter_model.bin", "adapter_model.pt", "adapter_model.pth", "adapter_model.pkl"];
const PREFIX = "base_model.model.";
const FLOAT_DTYPES = new Set(["F32", "F16", "BF16"]);

const LORA_TENSOR = /^base_model\.model\.(.+)\.(lora_A|lora_B)\.(weight|bias)$/;
const LINEAR_MODULE = /^model\.layers\.(\d+)\.(?:self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)$/;

interface ModuleTensors {
  layer: number;
  kind: ModuleKind;
  path: string;
  a?: string;
  b?: string;
  bias?: string;
}

/**
 * Bytes of the largest adapter file whose read buffer is kept for the next load. One thread parses one
 * adapter at a time, so each keeps one buffer: a load then reads into pages already mapped instead of
 * faulting in the file's size of fresh memory (on a VM that cost more than the read itself:
 * docs/BENCHMARKS.md, cold-load). Larger files get a buffer of their own, so a gateway that checked one
 * large upload does not hold its size.
 */
const KEPT_READ_BUFFER_BYTES = 128 * 1024 * 1024;
let readBuffer: Uint8Array | null = null;

/** The whole file, in this thread's kept read buffer where it fits (valid until the next call). */
function readWhole(path: string): Uint8Array {
  const fd = openSync(path, "r");
  try {
    const size = fstatSync(fd).size;
    let target: Uint8Array;
    if (size > KEPT_READ_BUFFER_BYTES) target = new Uint8Array(size);
    else {
      if (readBuffer === null || readBuffer.length < size) readBuffer = new Uint8Array(size);
      target = readBuffer.subarray(0, size);
    }
    readFully(fd, target, 0, path, "the file (changed meanwhile?)");
    return target;
  } finally {
    closeSync(fd);
  }
}

/**
 * A config is a few kilobytes (tens with a long target_modules or rank_pattern); parsed on every worker of
 * the base as well as on upload, one of hundreds of megabytes would cost them all that memory.
 */
export const MAX_CONFIG_BYTES = 1024 * 1024;

function readConfig(dir: string): unknown {
  const path = join(dir, CONFIG_FILE);
  if (!existsSync(path)) throw new AdapterError(`${dir}: no ${CONFIG_FILE}`);
  const bytes = statSync(path).size;
  if (bytes > MAX_CONFIG_BYTES) {
    throw new AdapterError(
      `${path}: ${bytes} bytes, more than an adapter config may hold (${MAX_CONFIG_BYTES})`,
    );
  }
  try {
    return JSON.parse(readFileSync(path, "utf8"));
  } catch (err) {
    throw new AdapterError(`${path}: not valid JSON (${(err as Error).message})`);
  }
}

function refuseFeatureTensor(name: string): void {
  if (name.includes("lora_magnitude_vector")) {
    throw new AdapterError(`tensor ${name}: DoRA adapters (lora_magnitude_vector) are not supported`);
  }
  if (name.includes("lora_embedding_A") || name.includes("lora_embedding_B")) {
    throw new AdapterError(`tensor ${name}: embedding LoRA is not supported`);
  }
  if (name.includes(".modules_to_save.") || name.includes("trainable_tokens")) {
    throw new AdapterError(
      `tensor ${name}: modules_to_save / trainable tokens replace base weights and are not supported`,
    );
  }
}

/** Groups the file's tensors by module, refusing any tensor that is not a LoRA A/B of a known module. */
function groupTensors(names: string[], model: ModelConfig): Map<string, ModuleTensors> {
  const modules = new Map<string, ModuleTensors>();
  for (const name of names) {
    refuseFeatureTensor(name);
    const m = LORA_TENSOR.exec(name);
    if (!m || (m[2] === "lora_A" && m[3] === "bias")) {
      throw new AdapterError(
        `tensor ${name} is not a LoRA weight (expected ${PREFIX}<module>.lora_A.weight, .lora_B.weight or .lora_B.bias)`,
      );
    }
    const path = m[1]!;
    const lm = LINEAR_MODULE.exec(path);
    if (!lm) {
      if (path === "model.embed_tokens" || path === "lm_head") {
        throw new AdapterError(`tensor ${name}: embedding LoRA (on ${path}) is not supported`);
      }
      throw new AdapterError(
        `tensor ${name}: module ${path} is not one of the base model's LoRA targets (q/k/v/o_proj, gate/up/down_proj of model.layers.N)`,
      );
    }
    const layer = Number(lm[1]);
    const kind = (lm[2] ?? lm[3]) as ModuleKind;
    if (layer >= model.numLayers) {
      throw new AdapterError(
        `tensor ${name}: layer ${layer} does not exist, the base model has ${model.numLayers} layers`,
      );
    }
    // Rebuild the canonical name so "model.layers.01" can never alias layer 1.
    if (modulePath(layer, kind) !== path) {
      throw new AdapterError(`tensor ${name}: module ${path} is not a canonical module name`);
    }
    const entry = modules.get(path) ?? { layer, kind, path };
    if (m[2] === "lora_A") entry.a = name;
    else if (m[3] === "weight") entry.b = name;
    else entry.bias = name;
    modules.set(path, entry);
  }
  return modules;
}

/** A SharedArrayBuffer of `bytes` for one adapter's rows: fresh, or one made ready before (peft-thread-entry.ts). */
export type SharedMemory = (bytes: number) => SharedArrayBuffer;

const freshMemory: SharedMemory = (bytes) => new SharedArrayBuffer(bytes);

/** Consecutive float32 rows carved out of one adapter's shared memory. */
class SharedRows {
  private next = 0;
  constructor(private readonly memory: SharedArrayBuffer) {}

  take(length: number): Float32Array {
    const rows = new Float32Array(this.memory, this.next, length);
    this.next += length * Float32Array.BYTES_PER_ELEMENT;
    return rows;
  }
}

/** target = scale · Bᵀ of a lora_B [out, rank]. */
function transposeScaled(
  target: Float32Array,
  b: Float32Array,
  outFeatures: number,
  rank: number,
  scale: number,
): void {
  // Row by row of the result: writes run in order (the other way round each lands a row apart).
  for (let r = 0; r < rank; r++) {
    const row = r * outFeatures;
    for (let o = 0; o < outFeatures; o++) target[row + o] = scale * b[o * rank + r]!;
  }
}

/** target = scale · values. */
function copyScaled(target: Float32Array, values: Float32Array, scale = 1): void {
  if (scale === 1) target.set(values);
  else for (let i = 0; i < values.length; i++) target[i] = scale * values[i]!;
}

/** A tensor's values as float32, and the largest of their magnitudes. */
interface CheckedTensor {
  values: Float32Array;
  largest: number;
}

function readChecked(weights: WeightIndex, name: string, shape: number[], why: string): CheckedTensor {
  const info = weights.info(name);
  if (!FLOAT_DTYPES.has(info.dtype)) {
    throw new AdapterError(`tensor ${name} has dtype ${info.dtype}; LoRA weights must be F32, F16 or BF16`);
  }
  if (info.shape.length !== shape.length || info.shape.some((d, i) => d !== shape[i])) {
    throw new AdapterError(
      `tensor ${name} has shape [${info.shape.join(", ")}], expected [${shape.join(", ")}] (${why})`,
    );
  }
  const values = weights.readFloat32(name);
  let largest = 0;
  for (let i = 0; i < values.length; i++) {
    const value = values[i]!;
    if (!Number.isFinite(value)) {
      throw new AdapterError(`tensor ${name} has a non-finite value (${value}) at flat index ${i}`);
    }
    largest = Math.max(largest, Math.abs(value));
  }
  return { values, largest };
}

/**
 * A tensor to be multiplied by `scale` into float32 rows, refused when that would make any of them
 * infinite: its largest magnitude decides, since rounding to float32 keeps order.
 */
function scalable(tensor: CheckedTensor, name: string, scale: number): Float32Array {
  const product = scale * tensor.largest;
  if (!Number.isFinite(Math.fround(product))) {
    throw new AdapterError(
      `tensor ${name}: its largest value ${tensor.largest} times the LoRA scale ${scale} is ${product}, past float32's range (3.4e38)`,
    );
  }
  return tensor.values;
}

/**
 * Loads and validates the PEFT LoRA adapter in `dir` for the base `model`. Throws AdapterError, with a
 * message naming the field or tensor, for anything invalid or unsupported. `memory` gives the shared
 * memory its rows go into (default: fresh).
 */
export function loadPeftAdapter(
  dir: string,
  model: ModelConfig,
  options: { name?: string; maxRank: number; memory?: SharedMemory },
): LoadedAdapter {
  const root = resolve(dir);
  if (!existsSync(root) || !statSync(root).isDirectory()) {
    throw new AdapterError(`${root}: not an adapter folder`);
  }
  const weightsPath = join(root, WEIGHTS_FILE);
  if (!existsSync(weightsPath)) {
    const pickle = PICKLE_FILES.find((f) => existsSync(join(root, f)));
    if (pickle) {
      throw new AdapterError(
        `${root}: has ${pickle} but no ${WEIGHTS_FILE}; pickled adapters are never loaded; convert to safetensors`,
      );
    }
    throw new AdapterError(`${root}: no ${WEIGHTS_FILE}`);
  }
  const cfg = parsePeftConfig(readConfig(root));

  // Read once: the bytes parsed are the bytes hashed.
  let bytes: Uint8Array;
  let weights: WeightIndex;
  try {
    bytes = readWhole(weightsPath);
    weights = weightsInMemory(bytes, weightsPath);
  } catch (err) {
    if (err instanceof SafetensorsError) throw new AdapterError(err.message, { cause: err });
    throw err;
  }
  const sha256 = createHash("sha256").update(bytes).digest("hex");
  const names = weights.names();
  if (names.length === 0) throw new AdapterError(`${weightsPath}: holds no tensors`);
  const grouped = groupTensors(names, model);

  // Checked first, so that the rows of every module come out of one piece of shared memory.
  const planned = [...grouped.values()].map((t) => {
    const what = `${PREFIX}${t.path}`;
    if (!isTargeted(cfg, t.path)) {
      throw new AdapterError(
        `tensors of ${what}: adapter_config.json does not target module ${t.path} (target_modules, exclude_modules, layers_to_transform)`,
      );
    }
    if (t.a === undefined || t.b === undefined) {
      throw new AdapterError(`${what}: has ${t.a ? "lora_A" : "lora_B"} but no ${t.a ? "lora_B" : "lora_A"}`);
    }
    if (t.bias !== undefined && !cfg.loraBias) {
      throw new AdapterError(
        `tensor ${t.bias}: lora_B has a bias but adapter_config.json has lora_bias false`,
      );
    }
    const rank = moduleRank(cfg, t.path);
    if (rank > options.maxRank) {
      throw new AdapterError(
        `${what}: rank ${rank} exceeds the maximum rank ${options.maxRank} this server is configured for`,
      );
    }
    return { t, a: t.a, b: t.b, rank, scale: moduleScale(cfg, t.path), ...moduleShape(model, t.kind) };
  });
  const floats = planned.reduce(
    (sum, m) => sum + m.rank * (m.inFeatures + m.outFeatures) + (m.t.bias === undefined ? 0 : m.outFeatures),
    0,
  );
  const rows = new SharedRows((options.memory ?? freshMemory)(floats * Float32Array.BYTES_PER_ELEMENT));

  const modules: LoraModule[] = [];
  for (const { t, a, b, rank, scale, inFeatures, outFeatures } of planned) {
    const why = `rank ${rank} from adapter_config.json, ${inFeatures} in and ${outFeatures} out features in the base`;
    try {
      const module: LoraModule = {
        layer: t.layer,
        kind: t.kind,
        rank,
        scale,
        a: rows.take(rank * inFeatures),
        scaledBT: rows.take(rank * outFeatures),
        scaledBias: t.bias === undefined ? null : rows.take(outFeatures),
        inFeatures,
        outFeatures,
      };
      copyScaled(module.a, readChecked(weights, a, [rank, inFeatures], why).values);
      const bValues = scalable(readChecked(weights, b, [outFeatures, rank], why), b, scale);
      transposeScaled(module.scaledBT, bValues, outFeatures, rank, scale);
      if (t.bias !== undefined) {
        const bias = scalable(readChecked(weights, t.bias, [outFeatures], why), t.bias, scale);
        copyScaled(module.scaledBias!, bias, scale);
      }
      modules.push(module);
    } catch (err) {
      if (err instanceof SafetensorsError) throw new AdapterError(err.message, { cause: err });
      throw err;
    }
  }
  const kindOrder = (k: ModuleKind): number => MODULE_KINDS.indexOf(k);
  modules.sort((x, y) => x.layer - y.layer || kindOrder(x.kind) - kindOrder(y.kind));

  return {
    name: options.name ?? basename(root),
    maxRank: modules.reduce((m, x) => Math.max(m, x.rank), 0),
    modules,
    bytes: bytes.length,
    sha256,
  };
}
