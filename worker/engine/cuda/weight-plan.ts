// Which checkpoint tensor goes where in the native model's weights (native.ts, setWeight): q, k and v
// rows fused into one [q+k+v, hidden] matrix per layer, gate and up into one [2·intermediate, hidden], so
// a step runs one GEMM for each instead of three and two. Every other tensor maps one to one.
import { headNormName, type ModelConfig, type ModuleKind, moduleShape, weightName } from "../model-config.ts";

/** Part of a native weight: `elements` values of checkpoint tensor `source` written from element `offset`. */
export interface WeightUpload {
  target: string;
  source: string;
  offset: number;
  elements: number;
}

/** Every native weight this model has, with its size in elements. */
export function nativeWeightSizes(model: ModelConfig): Map<string, number> {
  const sizes = new Map<string, number>();
  for (const upload of weightUploads(model)) {
    sizes.set(upload.target, Math.max(sizes.get(upload.target) ?? 0, upload.offset + upload.elements));
  }
  return sizes;
}

/** The uploads that fill every native weight exactly once, in checkpoint order (embeddings first). */
export function weightUploads(model: ModelConfig): WeightUpload[] {
  const hidden = model.hiddenSize;
  const uploads: WeightUpload[] = [
    { target: "embed", source: "model.embed_tokens.weight", offset: 0, elements: model.vocabSize * hidden },
  ];
  const linear = (kind: ModuleKind): number => {
    const { inFeatures, outFeatures } = moduleShape(model, kind);
    return inFeatures * outFeatures;
  };
  /** Consecutive tensors packed into one target, each starting where the previous one ended. */
  const fused = (target: string, parts: { source: string; elements: number }[]): void => {
    let offset = 0;
    for (const part of parts) {
      uploads.push({ target, ...part, offset });
      offset += part.elements;
    }
  };
  for (let l = 0; l < model.numLayers; l++) {
    const prefix = `layers.${l}`;
    uploads.push({
      target: `${prefix}.attn_norm`,
      source: `model.layers.${l}.input_layernorm.weight`,
      offset: 0,
      elements: hidden,
    });
    const qkv = ["q", "k", "v"] as const;
    fused(
      `${prefix}.qkv`,
      qkv.map((kind) => ({ source: weightName(l, kind), elements: linear(kind) })),
    );
    if (model.qkvBias) {
      fused(
        `${prefix}.qkv_bias`,
        qkv.map((kind) => ({
          source: weightName(l, kind).replace(/\.weight$/, ".bias"),
          elements: moduleShape(model, kind).outFeatures,
        })),
      );
    }
    if (model.qkNorm) {
      for (const kind of ["q", "k"] as const) {
        uploads.push({
          target: `${prefix}.${kind}_norm`,
          source: headNormName(l, kind),
          offset: 0,
          elements: model.headDim,
        });
      }
    }
    uploads.push({ target: `${prefix}.o`, source: weightName(l, "o"), offset: 0, elements: linear("o") });
    uploads.push({
      target: `${prefix}.mlp_norm`,
      source: `model.layers.${l}.post_attention_layernorm.weight`,
      offset: 0,
      elements: hidden,
    });
    fused(
      `${prefix}.gate_up`,
      (["gate", "up"] as const).map((kind) => ({ source: weightName(l, kind), elements: linear(kind) })),
    );
    uploads.push({
      target: `${prefix}.down`,
      source: weightName(l, "down"),
      offset: 0,
      elements: linear("down"),
    });
  }
  uploads.push({ target: "final_norm", source: "model.norm.weight", offset: 0, elements: hidden });
  if (!model.tieWordEmbeddings) {
    uploads.push({
      target: "lm_head",
      source: "lm_head.weight",
      offset: 0,
      elements: model.vocabSize * hidden,
    });
  }
  return uploads;
}
