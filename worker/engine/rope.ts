// Rotary position embedding: the inverse frequencies of each rotated pair (plain, linear-scaled,
// llama3-scaled, YaRN), as float32 like Hugging Face's, and the factor cos and sin are scaled by (YaRN's
// attention factor, else 1). The angle of position p is fround(p * inv[i]); the graph builds its cos/sin
// caches from these (see graph-builder.ts), the CUDA rotary kernel its sincos.
import type { ModelConfig } from "./model-config.ts";

export type RopeConfig = Pick<ModelConfig, "headDim" | "ropeTheta" | "ropeScaling">;

export function inverseFrequencies(cfg: RopeConfig): Float32Array {
  const half = cfg.headDim / 2;
  const inv = new Float32Array(half);
  for (let i = 0; i < half; i++) inv[i] = 1 / cfg.ropeTheta ** Math.fround((2 * i) / cfg.headDim);
  const s = cfg.ropeScaling;
  if (s === null) return inv;
  if (s.type === "linear") return inv.map((f) => f / s.factor);
  if (s.type === "yarn") return yarnFrequencies(cfg, inv, s);
  // Llama 3: long wavelengths are slowed by `factor`, short ones kept, the band between interpolated.
  const lowWavelen = s.originalMaxPositions / s.lowFreqFactor;
  const highWavelen = s.originalMaxPositions / s.highFreqFactor;
  return inv.map((f) => {
    const wavelen = (2 * Math.PI) / f;
    if (wavelen < highWavelen) return f;
    if (wavelen > lowWavelen) return f / s.factor;
    const smooth =
      (s.originalMaxPositions / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
    return (1 - smooth) * (f / s.factor) + smooth * f;
  });
}

/** What cos and sin are multiplied by: YaRN's attention factor, else 1. */
export function ropeScale(cfg: RopeConfig): number {
  return cfg.ropeScaling?.type === "yarn" ? cfg.ropeScaling.attentionFactor : 1;
}

type Yarn = Extract<NonNullable<RopeConfig["ropeScaling"]>, { type: "yarn" }>;

/**
 * YaRN: pairs that turn many times within the original context keep their frequency (extrapolation), pairs
 * that turn less than once are slowed by `factor` (interpolation), and a linear ramp over the pair index
 * blends the band between. The band is where the pair turns between betaFast and betaSlow times.
 */
function yarnFrequencies(cfg: RopeConfig, inv: Float32Array, s: Yarn): Float32Array {
  const dim = cfg.headDim;
  const base = cfg.ropeTheta;
  // The pair index at which a frequency turns `rotations` times over the original context.
  const correctionDim = (rotations: number) =>
    (dim * Math.log(s.originalMaxPositions / (rotations * 2 * Math.PI))) / (2 * Math.log(base));
  let low = correctionDim(s.betaFast);
  let high = correctionDim(s.betaSlow);
  if (s.truncate) {
    low = Math.floor(low);
    high = Math.ceil(high);
  }
  low = Math.max(low, 0);
  high = Math.min(high, dim - 1);
  if (low === high) high += 0.001;
  return inv.map((f, i) => {
    const ramp = Math.min(Math.max(Math.fround((i - low) / (high - low)), 0), 1);
    const extrapolation = 1 - ramp;
    return Math.fround(f / s.factor) * (1 - extrapolation) + f * extrapolation;
  });
}
