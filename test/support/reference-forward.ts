// An independent forward pass of a Llama-family model in plain TypeScript, float64 throughout, written
// from Hugging Face's modeling_llama / modeling_qwen2 / modeling_qwen3 and PEFT's LoRA Linear — no ONNX, no shared code
// with the graph builder beyond reading config and weights. The oracle the engine is checked against;
// clear and slow on purpose (tiny models only).
import type { LoadedAdapter, LoraModule } from "../../worker/adapters/peft.ts";
import {
  headNormName,
  loadModelConfig,
  type ModelConfig,
  type ModuleKind,
  weightName,
} from "../../worker/engine/model-config.ts";
import { openWeights, type WeightIndex } from "../../worker/engine/safetensors.ts";

type Vec = Float64Array;

/** One linear module y = W x (+ bias) (+ scale·(B A x + lora bias)); W is [out, in] as HF stores it. */
interface Linear {
  w: Float32Array;
  bias: Float32Array | null;
  lora: LoraModule | null;
  inFeatures: number;
  outFeatures: number;
}

function apply(lin: Linear, x: Vec): Vec {
  const { w, inFeatures: n, outFeatures: m } = lin;
  const y = new Float64Array(m);
  for (let o = 0; o < m; o++) {
    let s = lin.bias ? lin.bias[o]! : 0;
    const row = o * n;
    for (let i = 0; i < n; i++) s += w[row + i]! * x[i]!;
    y[o] = s;
  }
  const l = lin.lora;
  if (l) {
    // PEFT: result + lora_B(lora_A(x)) * scaling, where lora_B may carry a bias; the loaded adapter
    // holds scaling · lora_Bᵀ and scaling · bias.
    const ax = new Float64Array(l.rank);
    for (let r = 0; r < l.rank; r++) {
      let s = 0;
      for (let i = 0; i < n; i++) s += l.a[r * n + i]! * x[i]!;
      ax[r] = s;
    }
    for (let o = 0; o < m; o++) {
      let s = l.scaledBias ? l.scaledBias[o]! : 0;
      for (let r = 0; r < l.rank; r++) s += l.scaledBT[r * m + o]! * ax[r]!;
      y[o] = y[o]! + s;
    }
  }
  return y;
}

/** Qwen3's q_norm / k_norm: each head of `x` RMS-normalized over head_dim (in place). */
function normHeads(x: Vec, heads: number, headDim: number, weight: Float32Array, eps: number): void {
  for (let head = 0; head < heads; head++) {
    const at = head * headDim;
    x.set(rmsNorm(x.subarray(at, at + headDim), weight, eps), at);
  }
}

function rmsNorm(x: Vec, weight: Float32Array, eps: number): Vec {
  let ss = 0;
  for (let i = 0; i < x.length; i++) ss += x[i]! * x[i]!;
  const inv = 1 / Math.sqrt(ss / x.length + eps);
  return x.map((v, i) => v * inv * weight[i]!);
}

/**
 * HF's inverse frequencies: default, "linear" (divided by factor), "llama3" (wavelength-banded) or "yarn"
 * (transformers' _compute_yarn_parameters: interpolated by factor below the correction band, kept above
 * it, a linear ramp between).
 */
export function ropeInverseFrequencies(cfg: ModelConfig): Float64Array {
  const d = cfg.headDim;
  const inv = new Float64Array(d / 2);
  for (let i = 0; i < d / 2; i++) inv[i] = 1 / cfg.ropeTheta ** ((2 * i) / d);
  const s = cfg.ropeScaling;
  if (s?.type === "linear") return inv.map((f) => f / s.factor);
  if (s?.type === "yarn") {
    const bandEdge = (rotations: number) =>
      (d * Math.log(s.originalMaxPositions / (rotations * 2 * Math.PI))) / (2 * Math.log(cfg.ropeTheta));
    const low = Math.max(s.truncate ? Math.floor(bandEdge(s.betaFast)) : bandEdge(s.betaFast), 0);
    let high = Math.min(s.truncate ? Math.ceil(bandEdge(s.betaSlow)) : bandEdge(s.betaSlow), d - 1);
    if (low === high) high += 0.001;
    return inv.map((f, i) => {
      const interpolated = Math.min(Math.max((i - low) / (high - low), 0), 1);
      return (f / s.factor) * interpolated + f * (1 - interpolated);
    });
  }
  if (s?.type === "llama3") {
    const lowFreqWavelen = s.originalMaxPositions / s.lowFreqFactor;
    const highFreqWavelen = s.originalMaxPositions / s.highFreqFactor;
    return inv.map((f) => {
      const wavelen = (2 * Math.PI) / f;
      if (wavelen < highFreqWavelen) return f;
      if (wavelen > lowFreqWavelen) return f / s.factor;
      const smooth =
        (s.originalMaxPositions / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
      return (1 - smooth) * (f / s.factor) + smooth * f;
    });
  }
  return inv;
}

/**
 * rotate_half rotary embedding of each head of `x` (heads × headDim) at `position`, in place; cos and sin
 * times `scale` (YaRN's attention factor, as HF's rotary embedding applies it).
 */
function rotate(
  x: Vec,
  heads: number,
  headDim: number,
  position: number,
  invFreq: Float64Array,
  scale: number,
): void {
  const half = headDim / 2;
  for (let h = 0; h < heads; h++) {
    const base = h * headDim;
    for (let i = 0; i < half; i++) {
      const angle = position * invFreq[i]!;
      const c = Math.cos(angle) * scale;
      const s = Math.sin(angle) * scale;
      const x1 = x[base + i]!;
      const x2 = x[base + half + i]!;
      x[base + i] = x1 * c - x2 * s;
      x[base + half + i] = x2 * c + x1 * s;
    }
  }
}

function silu(v: number): number {
  return v / (1 + Math.exp(-v));
}

function linearOf(
  weights: WeightIndex,
  cfg: ModelConfig,
  layer: number,
  kind: ModuleKind,
  lora: Map<string, LoraModule>,
): Linear {
  const name = weightName(layer, kind);
  const [outFeatures, inFeatures] = weights.info(name).shape as [number, number];
  const biasName = name.replace(/\.weight$/, ".bias");
  const hasBias = cfg.qkvBias && (kind === "q" || kind === "k" || kind === "v");
  return {
    w: weights.readFloat32(name),
    bias: hasBias ? weights.readFloat32(biasName) : null,
    lora: lora.get(`${layer}.${kind}`) ?? null,
    inFeatures,
    outFeatures,
  };
}

/** Logits [vocab] for every position of `tokens`, with `adapter` applied as PEFT applies it. */
export function referenceLogits(modelDir: string, tokens: number[], adapter?: LoadedAdapter): Float32Array[] {
  const cfg = loadModelConfig(modelDir);
  const weights = openWeights(modelDir);
  const lora = new Map((adapter?.modules ?? []).map((m) => [`${m.layer}.${m.kind}`, m]));
  const { hiddenSize: hs, numHeads, numKvHeads, headDim } = cfg;
  const groups = numHeads / numKvHeads;
  const invFreq = ropeInverseFrequencies(cfg);
  const ropeScale = cfg.ropeScaling?.type === "yarn" ? cfg.ropeScaling.attentionFactor : 1;
  const embed = weights.readFloat32("model.embed_tokens.weight");

  let hidden: Vec[] = tokens.map((t) => {
    if (!Number.isInteger(t) || t < 0 || t >= cfg.vocabSize) throw new RangeError(`token ${t} out of range`);
    return Float64Array.from(embed.subarray(t * hs, (t + 1) * hs));
  });

  for (let layer = 0; layer < cfg.numLayers; layer++) {
    const lin = (kind: ModuleKind): Linear => linearOf(weights, cfg, layer, kind, lora);
    const [q, k, v, o] = [lin("q"), lin("k"), lin("v"), lin("o")];
    const [gate, up, down] = [lin("gate"), lin("up"), lin("down")];
    const inNorm = weights.readFloat32(`model.layers.${layer}.input_layernorm.weight`);
    const postNorm = weights.readFloat32(`model.layers.${layer}.post_attention_layernorm.weight`);

    const qs: Vec[] = [];
    const ks: Vec[] = [];
    const vs: Vec[] = [];
    hidden.forEach((h, pos) => {
      const x = rmsNorm(h, inNorm, cfg.rmsNormEps);
      const qp = apply(q, x);
      const kp = apply(k, x);
      if (cfg.qkNorm) {
        normHeads(qp, numHeads, headDim, weights.readFloat32(headNormName(layer, "q")), cfg.rmsNormEps);
        normHeads(kp, numKvHeads, headDim, weights.readFloat32(headNormName(layer, "k")), cfg.rmsNormEps);
      }
      rotate(qp, numHeads, headDim, pos, invFreq, ropeScale);
      rotate(kp, numKvHeads, headDim, pos, invFreq, ropeScale);
      qs.push(qp);
      ks.push(kp);
      vs.push(apply(v, x));
    });

    hidden = hidden.map((h, pos) => {
      const attn = new Float64Array(numHeads * headDim);
      for (let head = 0; head < numHeads; head++) {
        const kvHead = Math.floor(head / groups);
        const scores = new Float64Array(pos + 1);
        let max = Number.NEGATIVE_INFINITY;
        for (let j = 0; j <= pos; j++) {
          let s = 0;
          for (let d = 0; d < headDim; d++)
            s += qs[pos]![head * headDim + d]! * ks[j]![kvHead * headDim + d]!;
          scores[j] = s / Math.sqrt(headDim);
          max = Math.max(max, scores[j]!);
        }
        let total = 0;
        for (let j = 0; j <= pos; j++) {
          scores[j] = Math.exp(scores[j]! - max);
          total += scores[j]!;
        }
        for (let j = 0; j <= pos; j++) {
          const p = scores[j]! / total;
          for (let d = 0; d < headDim; d++) {
            attn[head * headDim + d] = attn[head * headDim + d]! + p * vs[j]![kvHead * headDim + d]!;
          }
        }
      }
      const projected = apply(o, attn);
      const afterAttn = h.map((value, i) => value + projected[i]!);
      const x = rmsNorm(afterAttn, postNorm, cfg.rmsNormEps);
      const g = apply(gate, x);
      const u = apply(up, x);
      const act = g.map((value, i) => silu(value) * u[i]!);
      const mlp = apply(down, act);
      return afterAttn.map((value, i) => value + mlp[i]!);
    });
  }

  const finalNorm = weights.readFloat32("model.norm.weight");
  const head = cfg.tieWordEmbeddings ? embed : weights.readFloat32("lm_head.weight");
  return hidden.map((h) => {
    const x = rmsNorm(h, finalNorm, cfg.rmsNormEps);
    const logits = new Float32Array(cfg.vocabSize);
    for (let t = 0; t < cfg.vocabSize; t++) {
      let s = 0;
      for (let i = 0; i < hs; i++) s += head[t * hs + i]! * x[i]!;
      logits[t] = s;
    }
    return logits;
  });
}
