// The decode path's device kernels and their launchers. Every launch takes the step's per-row metadata
// from device memory (RowMeta) and sizes its grid by the row count alone, so a step's launches can be
// captured once as a CUDA graph and replayed for any step with the same row counts.
#pragma once
#include "gpu.h"

#include <cstddef>
#include <cstdint>

namespace luminet {

/** Source element types setWeight and adapter writes convert from. */
enum class SourceDtype : int { F32 = 0, F16 = 1, BF16 = 2 };

/** A step's rows, in device memory: row i is tokens[i] at positions[i] of cache row cacheRows[i] under slots[i]. */
struct RowMeta {
  const int* tokens;
  const int* cacheRows;
  const int* positions;
  const int* slots;
  /** Rows sorted by slot: LoRA kernels visit rows in this order so one adapter's rows run together. */
  const int* order;
  /** The rows whose logits are computed. */
  const int* logitRows;
};

/** The KV cache: [cacheRows][layers][kvHeads][maxContext][headDim] halves, keys and values apart. */
struct KvCacheView {
  half* keys;
  half* values;
  int layers;
  int kvHeads;
  int maxContext;
  int headDim;
};

/** Qwen3's q_norm and k_norm: head_dim weights each (null: the model has none) and the RMSNorm epsilon. */
struct HeadNorms {
  const half* q = nullptr;
  const half* k = nullptr;
  float eps = 0.f;
};

struct AttentionShape {
  int heads;
  int kvHeads;
  int headDim;
  float scale;
};

/** Most q heads one kv head serves, and most accumulators per attention thread (group·headDim ≤ 1024). */
constexpr int kMaxGroup = 8;
constexpr int kAttentionThreads = 128;
constexpr int kMaxAttentionOutputs = 1024;

/** One LoRA-adapted projection in a group that shares an input (q, k, v) or an output buffer. */
struct LoraModuleView {
  /** Banks of slots 1..slots, slot s at row s-1: A [slots][maxRank][in], scale·Bᵀ [slots][maxRank][out], scale·bias [slots][out]. */
  const half* a;
  const half* scaledBT;
  const half* scaledBias;
  int in;
  int out;
  /** Where this module's outputs start in the group's output row. */
  int column;
  /** Index in q, k, v, o, gate, up, down. */
  int kind;
};

constexpr int kMaxGroupModules = 3;
constexpr int kModuleKinds = 7;

struct LoraGroupView {
  LoraModuleView modules[kMaxGroupModules];
  int count;
  int layer;
  int layers;
  int maxRank;
  /** ranks[(slot·layers + layer)·7 + kind] for slots 0..slots: rows in use, 0 when untargeted or empty. */
  const int* ranks;
  /** hasBias, same indexing. */
  const unsigned char* hasBias;
};

/** Lets the shrink kernel hold an input row of `widestInput` floats in shared memory. */
void configureLoraShrink(int widestInput);

void launchConvertToHalf(const void* source, SourceDtype dtype, half* target, size_t count, cudaStream_t stream);

void launchEmbed(const RowMeta& rows, int rowCount, const half* table, int hidden, float* residual,
                 cudaStream_t stream);

/** out[i] = fp16(x[source(i)] · rsqrt(mean(x²) + eps) · weight); source(i) = gather ? gather[i] : i. */
void launchRmsNorm(const float* x, const int* gather, int rowCount, int hidden, const half* weight, float eps,
                   half* out, cudaStream_t stream);

/**
 * Adds the q/k/v bias (when given), RMS-normalizes each q and k head (when `norms` has weights), rotates q
 * and k (Hugging Face's rotate-half layout), writes q to `queries` and this layer's key and value of every
 * row into the cache at the row's position.
 */
void launchRotaryAndCache(const RowMeta& rows, int rowCount, const float* qkv, const half* qkvBias,
                          const HeadNorms& norms, const float* invFreq, const AttentionShape& shape, const KvCacheView& cache, int layer,
                          float* queries, cudaStream_t stream);

/** Each row attends to positions 0..positions[row] of its cache row (grouped-query, online softmax). */
void launchAttention(const RowMeta& rows, int rowCount, const float* queries, const AttentionShape& shape,
                     const KvCacheView& cache, int layer, half* out, cudaStream_t stream);

/** out = silu(gate) · up, from gateUp rows [gate | up]. */
void launchSiluMul(const float* gateUp, int rowCount, int intermediate, half* out, cudaStream_t stream);

/** shrink[row][module][r] = x[row] · A[slot][r] for r < rank: each row's adapter, each rank row once. */
void launchLoraShrink(const RowMeta& rows, int rowCount, const LoraGroupView& group, const half* x, int xStride,
                      float* shrink, cudaStream_t stream);

/** y[row][column + c] += shrink[row][module] · scale·Bᵀ[slot][:, c] + scale·bias[slot][c]. */
void launchLoraExpand(const RowMeta& rows, int rowCount, const LoraGroupView& group, const float* shrink,
                      float* y, int yStride, cudaStream_t stream);

/** Most candidates a row can return (one thread each in the selection's sort). */
constexpr int kMaxCandidates = 256;

/**
 * Each row's `count` largest logits, largest first (ties: lower id first; NaN counts as -inf), and the
 * log-sum-exp of the row's logits / temperature (temperature ≤ 0 counts as 1): what a host sampler needs to
 * draw from top-k / top-p and report logprobs without the whole row.
 */
void launchTopCandidates(const float* logits, int rowCount, int vocab, int count, const float* temperatures, int* ids,
                         float* values, float* logSumExp, cudaStream_t stream);

/** One logit's penalties (decode-row.ts RowPenalties), in the step's logit rows. */
struct PenaltyView {
  const int* rows;  // logit row of each entry
  const int* tokens;
  const double* repetition;
  const double* presence;
  const double* frequency;
  int count;
};

/**
 * Applies each entry to logits[row][token] in place as the host sampler does: repetition (unless 1) with
 * the product or quotient rounded to float, then the presence and frequency subtraction rounded again.
 */
void launchPenalties(float* logits, int vocab, const PenaltyView& penalties, cudaStream_t stream);

/** The first index of each row's largest logit. */
void launchArgmax(const float* logits, int rowCount, int vocab, int* out, cudaStream_t stream);

}  // namespace luminet
