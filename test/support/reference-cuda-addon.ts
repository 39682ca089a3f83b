// The native CUDA addon's contract (worker/engine/cuda/native.ts) carried out in plain TypeScript, for
// tests on machines without a GPU: fused weights uploaded in parts, adapter slots, a KV cache row per
// sequence, and ragged steps whose rows write their key and value before attention. Slow and clear (tiny
// models only). It is what CudaEngine is checked against the onnxruntime Engine with, so it also pins
// down what the real addon must do; it refuses a step until every weight element has been written once.

import type {
  CudaAddon,
  CudaModelSpec,
  NativeAdapterModule,
  NativeCudaModel,
  NativeMemory,
  NativeStep,
  NativeStepResult,
  WeightDtype,
} from "../../worker/engine/cuda/native.ts";
import { bfloat16ToFloat32, float16ToFloat32 } from "../../worker/engine/dtype.ts";

/** Sizes of every native weight, as native.ts documents them. */
function weightSizes(s: CudaModelSpec): Map<string, number> {
  const q = s.heads * s.headDim;
  const kv = s.kvHeads * s.headDim;
  const sizes = new Map<string, number>([
    ["embed", s.vocab * s.hidden],
    ["final_norm", s.hidden],
  ]);
  if (!s.tieWordEmbeddings) sizes.set("lm_head", s.vocab * s.hidden);
  for (let l = 0; l < s.layers; l++) {
    sizes.set(`layers.${l}.attn_norm`, s.hidden);
    sizes.set(`layers.${l}.qkv`, (q + 2 * kv) * s.hidden);
    if (s.qkvBias) sizes.set(`layers.${l}.qkv_bias`, q + 2 * kv);
    sizes.set(`layers.${l}.o`, s.hidden * q);
    sizes.set(`layers.${l}.mlp_norm`, s.hidden);
    sizes.set(`layers.${l}.gate_up`, 2 * s.intermediate * s.hidden);
    sizes.set(`layers.${l}.down`, s.hidden * s.intermediate);
  }
  return sizes;
}

function decode(data: Uint8Array, dtype: WeightDtype): Float32Array {
  const copy = data.slice();
  switch (dtype) {
    case "F32":
      return new Float32Array(copy.buffer, 0, copy.byteLength / 4);
    case "F16":
      return float16ToFloat32(new Uint16Array(copy.buffer, 0, copy.byteLength / 2));
    case "BF16":
      return bfloat16ToFloat32(new Uint16Array(copy.buffer, 0, copy.byteLength / 2));
  }
}

/** y[o] = Σ_i w[o·n + i] · x[i] (+ bias[o]); w is [out, in] from element `row0` on. */
function matVec(w: Float32Array, row0: number, out: number, x: Float64Array, bias?: Float32Array, bias0 = 0) {
  const n = x.length;
  const y = new Float64Array(out);
  for (let o = 0; o < out; o++) {
    let sum = bias ? bias[bias0 + o]! : 0;
    const base = (row0 + o) * n;
    for (let i = 0; i < n; i++) sum += w[base + i]! * x[i]!;
    y[o] = sum;
  }
  return y;
}

function rmsNorm(x: Float64Array, weight: Float32Array, eps: number): Float64Array {
  let ss = 0;
  for (const v of x) ss += v * v;
  const inv = 1 / Math.sqrt(ss / x.length + eps);
  return x.map((v, i) => v * inv * weight[i]!);
}

class ReferenceCudaModel implements NativeCudaModel {
  private readonly sizes: Map<string, number>;
  private readonly weights = new Map<string, Float32Array>();
  /** Per weight, how many times each element was written. */
  private readonly writes = new Map<string, Uint8Array>();
  /** Per slot (index = slot), its modules by `${layer}.${kind}`. */
  private readonly slots: Map<string, NativeAdapterModule>[];
  /** [cacheRow][layer] keys and values, [maxContext, kvHeads·headDim]. */
  private readonly keys: Float32Array[][];
  private readonly values: Float32Array[][];
  private closed = false;
  /** Every step this model ran, for tests that look at what the engine asked for. */
  readonly steps: NativeStep[] = [];

  constructor(readonly spec: CudaModelSpec) {
    this.sizes = weightSizes(spec);
    for (const [name, size] of this.sizes) {
      this.weights.set(name, new Float32Array(size));
      this.writes.set(name, new Uint8Array(size));
    }
    this.slots = Array.from({ length: spec.slots + 1 }, () => new Map());
    const kvWidth = spec.kvHeads * spec.headDim;
    const cache = () =>
      Array.from({ length: spec.cacheRows }, () =>
        Array.from({ length: spec.layers }, () => new Float32Array(spec.maxContext * kvWidth)),
      );
    this.keys = cache();
    this.values = cache();
  }

  setWeight(name: string, data: Uint8Array, dtype: WeightDtype, offset: number): void {
    const target = this.weights.get(name);
    if (!target) throw new Error(`no native weight ${name}`);
    const values = decode(data, dtype);
    if (offset < 0 || offset + values.length > target.length) {
      throw new Error(`${name}: ${values.length} values at ${offset} run past its ${target.length}`);
    }
    target.set(values, offset);
    const writes = this.writes.get(name)!;
    for (let i = offset; i < offset + values.length; i++) writes[i]! += 1;
  }

  async writeAdapter(slot: number, modules: NativeAdapterModule[]): Promise<void> {
    if (slot < 1 || slot > this.spec.slots) throw new Error(`slot ${slot} out of range`);
    const byPlace = new Map<string, NativeAdapterModule>();
    for (const m of modules) {
      if (m.rank > this.spec.maxRank) throw new Error(`rank ${m.rank} over ${this.spec.maxRank}`);
      byPlace.set(`${m.layer}.${m.kind}`, m);
    }
    this.slots[slot] = byPlace;
  }

  clearSlot(slot: number): void {
    this.slots[slot] = new Map();
  }

  async step(step: NativeStep): Promise<NativeStepResult> {
    if (this.closed) throw new Error("model is closed");
    this.checkWeightsComplete();
    const s = this.spec;
    const n = step.tokens.length;
    if (n === 0 || n > s.maxStepTokens) throw new Error(`${n} rows: a step holds 1..${s.maxStepTokens}`);
    if (step.logitRows.length === 0 || step.logitRows.some((r) => r < 0 || r >= n)) {
      throw new Error("logitRows must name 1..rows rows");
    }
    this.steps.push(step);
    const q = s.heads * s.headDim;
    const kv = s.kvHeads * s.headDim;
    const embed = this.weights.get("embed")!;
    let hidden = Array.from(step.tokens, (t) =>
      Float64Array.from(embed.subarray(t * s.hidden, (t + 1) * s.hidden)),
    );
    for (let l = 0; l < s.layers; l++) {
      const w = (name: string) => this.weights.get(`layers.${l}.${name}`)!;
      const qs: Float64Array[] = [];
      // Every row's key and value goes into the cache first: later rows of a prefill chunk attend to them.
      hidden.forEach((h, r) => {
        const x = rmsNorm(h, w("attn_norm"), s.rmsNormEps);
        const bias = s.qkvBias ? w("qkv_bias") : undefined;
        const slot = step.slots[r]!;
        const qp = this.linear(l, 0, slot, x, matVec(w("qkv"), 0, q, x, bias, 0));
        const kp = this.linear(l, 1, slot, x, matVec(w("qkv"), q, kv, x, bias, q));
        const vp = this.linear(l, 2, slot, x, matVec(w("qkv"), q + kv, kv, x, bias, q + kv));
        const position = step.positions[r]!;
        this.rotate(qp, s.heads, position);
        this.rotate(kp, s.kvHeads, position);
        qs.push(qp);
        this.keys[step.cacheRows[r]!]![l]!.set(kp, position * kv);
        this.values[step.cacheRows[r]!]![l]!.set(vp, position * kv);
      });
      hidden = hidden.map((h, r) => {
        const attn = this.attend(
          qs[r]!,
          this.keys[step.cacheRows[r]!]![l]!,
          this.values[step.cacheRows[r]!]![l]!,
          step.positions[r]!,
        );
        const slot = step.slots[r]!;
        const o = this.linear(l, 3, slot, attn, matVec(w("o"), 0, s.hidden, attn));
        const afterAttn = h.map((v, i) => v + o[i]!);
        const x = rmsNorm(afterAttn, w("mlp_norm"), s.rmsNormEps);
        const gate = this.linear(l, 4, slot, x, matVec(w("gate_up"), 0, s.intermediate, x));
        const up = this.linear(l, 5, slot, x, matVec(w("gate_up"), s.intermediate, s.intermediate, x));
        const act = gate.map((g, i) => (g / (1 + Math.exp(-g))) * up[i]!);
        const down = this.linear(l, 6, slot, act, matVec(w("down"), 0, s.hidden, act));
        return afterAttn.map((v, i) => v + down[i]!);
      });
    }
    const head = this.weights.get(s.tieWordEmbeddings ? "embed" : "lm_head")!;
    const logits = new Float32Array(step.logitRows.length * s.vocab);
    const argmax = new Int32Array(step.logitRows.length);
    step.logitRows.forEach((row, i) => {
      const x = rmsNorm(hidden[row]!, this.weights.get("final_norm")!, s.rmsNormEps);
      const out = matVec(head, 0, s.vocab, x);
      logits.set(out, i * s.vocab);
      let best = 0;
      for (let t = 1; t < s.vocab; t++) if (out[t]! > out[best]!) best = t;
      argmax[i] = best;
    });
    return { argmax, logits: step.returnLogits ? logits : null };
  }

  memory(): NativeMemory {
    const weightsBytes = [...this.sizes.values()].reduce((a, b) => a + b * 2, 0);
    return {
      weightsBytes,
      kvCacheBytes: 0,
      adapterBankBytes: 0,
      scratchBytes: 0,
      freeBytes: 0,
      totalBytes: 0,
    };
  }

  /** Times a gemmSize³ product and a copy of copyBytes here, in JavaScript: the host's rates, not a GPU's. */
  async roofline(sizes: { gemmSize: number; copyBytes: number; repeats: number }) {
    const n = sizes.gemmSize;
    const a = new Float32Array(n * n).fill(0.5);
    const c = new Float32Array(n * n);
    const source = new Uint8Array(sizes.copyBytes).fill(1);
    const target = new Uint8Array(sizes.copyBytes);
    let gemmSeconds = 0;
    let copySeconds = 0;
    for (let r = 0; r < sizes.repeats; r++) {
      let start = performance.now();
      for (let i = 0; i < n; i++)
        for (let k = 0; k < n; k++)
          for (let j = 0; j < n; j++) c[i * n + j]! += a[i * n + k]! * a[k * n + j]!;
      gemmSeconds += (performance.now() - start) / 1000;
      start = performance.now();
      target.set(source);
      copySeconds += (performance.now() - start) / 1000;
    }
    return {
      flopsPerSecond: (2 * n ** 3 * sizes.repeats) / gemmSeconds,
      bytesPerSecond: (2 * sizes.copyBytes * sizes.repeats) / copySeconds,
    };
  }

  deviceName(): string {
    return "TypeScript reference";
  }

  close(): void {
    this.closed = true;
  }

  /** base + x·Aᵀ·(scale·Bᵀ) + scale·bias of the slot's module, when the slot has one for (layer, kind). */
  private linear(
    layer: number,
    kind: number,
    slot: number,
    x: Float64Array,
    base: Float64Array,
  ): Float64Array {
    const m = slot === 0 ? undefined : this.slots[slot]!.get(`${layer}.${kind}`);
    if (!m) return base;
    const out = base.length;
    for (let r = 0; r < m.rank; r++) {
      let ax = 0;
      for (let i = 0; i < x.length; i++) ax += m.a[r * x.length + i]! * x[i]!;
      for (let o = 0; o < out; o++) base[o] = base[o]! + ax * m.scaledBT[r * out + o]!;
    }
    if (m.scaledBias) for (let o = 0; o < out; o++) base[o] = base[o]! + m.scaledBias[o]!;
    return base;
  }

  /** Rotary embedding (rotate-half pairs i and i + headDim/2) of every head, in place. */
  private rotate(x: Float64Array, heads: number, position: number): void {
    const { headDim, invFreq } = this.spec;
    const half = headDim / 2;
    for (let h = 0; h < heads; h++) {
      for (let i = 0; i < half; i++) {
        const angle = Math.fround(position * invFreq[i]!);
        const [c, sn] = [Math.cos(angle), Math.sin(angle)];
        const a = x[h * headDim + i]!;
        const b = x[h * headDim + half + i]!;
        x[h * headDim + i] = a * c - b * sn;
        x[h * headDim + half + i] = b * c + a * sn;
      }
    }
  }

  /** Causal grouped-query attention of one row over its cache row's positions 0..position. */
  private attend(q: Float64Array, keys: Float32Array, values: Float32Array, position: number): Float64Array {
    const { heads, kvHeads, headDim } = this.spec;
    const kvWidth = kvHeads * headDim;
    const out = new Float64Array(heads * headDim);
    for (let h = 0; h < heads; h++) {
      const g = Math.floor(h / (heads / kvHeads));
      const scores = new Float64Array(position + 1);
      for (let j = 0; j <= position; j++) {
        let dot = 0;
        for (let d = 0; d < headDim; d++) dot += q[h * headDim + d]! * keys[j * kvWidth + g * headDim + d]!;
        scores[j] = dot / Math.sqrt(headDim);
      }
      const max = Math.max(...scores);
      let total = 0;
      for (let j = 0; j <= position; j++) {
        scores[j] = Math.exp(scores[j]! - max);
        total += scores[j]!;
      }
      for (let j = 0; j <= position; j++) {
        const p = scores[j]! / total;
        for (let d = 0; d < headDim; d++) out[h * headDim + d]! += p * values[j * kvWidth + g * headDim + d]!;
      }
    }
    return out;
  }

  private checkWeightsComplete(): void {
    for (const [name, writes] of this.writes) {
      const bad = writes.findIndex((count) => count !== 1);
      if (bad >= 0)
        throw new Error(`weight ${name} element ${bad} was written ${writes[bad]} times, not once`);
    }
  }
}

/** A CudaAddon whose models are ReferenceCudaModels; `models` lists those it built. */
export function referenceCudaAddon(deviceCount = 1): CudaAddon & { models: ReferenceCudaModel[] } {
  const models: ReferenceCudaModel[] = [];
  return {
    models,
    deviceCount: () => deviceCount,
    CudaModel: class {
      constructor(spec: CudaModelSpec) {
        const model = new ReferenceCudaModel(spec);
        models.push(model);
        // biome-ignore lint/correctness/noConstructorReturn: the addon's constructor yields the model itself.
        return model;
      }
    } as unknown as CudaAddon["CudaModel"],
  };
}
