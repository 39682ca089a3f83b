// Rotary position embedding: the inverse frequencies of each rotated pair (plain, linear-scaled,
// llama3-scaled), as float32 like Hugging Face's. The angle of position p is fround(p * inv[i]); the
// graph builds its cos/sin caches from these (see graph-builder.ts).
import type { ModelConfig } from "./model-config.ts";

export type RopeConfig = Pick<ModelConfig, "headDim" | "ropeTheta" | "ropeScaling">;

export function inverseFrequencies(cfg: RopeConfig): Float32Array {
  const half = cfg.headDim / 2;
  const inv = new Float32Array(half);
  for (let i = 0; i < half; i++) inv[i] = 1 / cfg.ropeTheta ** Math.fround((2 * i) / cfg.headDim);
  const s = cfg.ropeScaling;
  if (s === null) return inv;
  if (s.type === "linear") return inv.map((f) => f / s.factor);
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
