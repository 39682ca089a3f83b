
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>

#include "cuda-check.h"
#include "kernels.cuh"

namespace luminet {

namespace {

constexpr int kWarp = 32;

__device__ __forceinline__ float warpSum(float v) {
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

__device__ __forceinline__ float warpMax(float v) {
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

/** Sum over the block; every thread gets it. `scratch` holds one float per warp. */
__device__ float blockSum(float v, float* scratch) {
  const int lane = threadIdx.x % kWarp;
  const int warp = threadIdx.x / kWarp;
  const int warps = (blockDim.x + kWarp - 1) / kWarp;
  v = warpSum(v);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float total = 0.f;
  for (int w = 0; w < warps; ++w) total += scratch[w];
  return total;
}

/** Eight halves at once (one 16-byte load), as floats. */
__device__ __forceinline__ void loadHalf8(const half* p, float (&out)[8]) {
#ifdef LUMINET_CPU_EMULATION
  if (reinterpret_cast<uintptr_t>(p) % 16 != 0) emulation::fail("a 16-byte load from an address not 16-byte aligned");
#endif
  union {
    uint4 raw;
    half2 pairs[4];
  } bits;
  bits.raw = *reinterpret_cast<const uint4*>(p);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 f = __half22float2(bits.pairs[i]);
    out[2 * i] = f.x;
    out[2 * i + 1] = f.y;
  }
}

__global__ void convertToHalfKernel(const void* source, int dtype, half* target, size_t count) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < count; i += size_t(gridDim.x) * blockDim.x) {
    float v;
    if (dtype == int(SourceDtype::F32)) {
      v = static_cast<const float*>(source)[i];
    } else if (dtype == int(SourceDtype::F16)) {
      target[i] = static_cast<const half*>(source)[i];
      continue;
    } else {
      v = __bfloat162float(static_cast<const __nv_bfloat16*>(source)[i]);
    }
    target[i] = __float2half_rn(v);
  }
}

__global__ void embedKernel(RowMeta rows, const half* table, int hidden, float* residual) {
  const int row = blockIdx.x;
  const half* source = table + size_t(rows.tokens[row]) * hidden;
  float* target = residual + size_t(row) * hidden;
  for (int i = threadIdx.x; i < hidden; i += blockDim.x) target[i] = __half2float(source[i]);
}

__global__ void rmsNormKernel(const float* x, const int* gather, int hidden, const half* weight, float eps,
                              half* out) {
  __shared__ float scratch[32];
  const int row = blockIdx.x;
  const float* source = x + size_t(gather ? gather[row] : row) * hidden;
  float squares = 0.f;
  for (int i = threadIdx.x; i < hidden; i += blockDim.x) squares += source[i] * source[i];
  const float inverse = rsqrtf(blockSum(squares, scratch) / hidden + eps);
  half* target = out + size_t(row) * hidden;
  for (int i = threadIdx.x; i < hidden; i += blockDim.x)
    target[i] = __float2half_rn(source[i] * inverse * __half2float(weight[i]));
}

// grid (rows, heads + kvHeads), one thread per rotated pair (a warp multiple: threads past the pairs only
// join the head norm's block sum).
__global__ void rotaryAndCacheKernel(RowMeta rows, const float* qkv, const half* qkvBias, HeadNorms norms,
                                     const float* invFreq, AttentionShape shape, KvCacheView cache, int layer,
                                     float* queries) {
  __shared__ float scratch[32];
  const int row = blockIdx.x;
  const int head = blockIdx.y;
  const int pair = threadIdx.x;
  const int half_ = shape.headDim / 2;
  const bool rotates = pair < half_;
  const bool isQuery = head < shape.heads;
  const int kvHead = head - shape.heads;
  const int qkvWidth = (shape.heads + 2 * shape.kvHeads) * shape.headDim;
  const float* source = qkv + size_t(row) * qkvWidth;
  auto value = [&](int column) { return source[column] + (qkvBias ? __half2float(qkvBias[column]) : 0.f); };
  const int base = (isQuery ? head : shape.heads + kvHead) * shape.headDim;
  float x1 = rotates ? value(base + pair) : 0.f, x2 = rotates ? value(base + pair + half_) : 0.f;
  // The same for the whole block, so every thread reaches the block sum.
  const half* norm = isQuery ? norms.q : norms.k;
  if (norm) {
    const float inverse = rsqrtf(blockSum(x1 * x1 + x2 * x2, scratch) / shape.headDim + norms.eps);
    if (rotates) {
      x1 *= inverse * __half2float(norm[pair]);
      x2 *= inverse * __half2float(norm[pair + half_]);
    }
  }
  if (!rotates) return;
  const int position = rows.positions[row];
  // Hugging Face computes the angle as a float32 product, then its cos and sin.
  const float angle = float(position) * invFreq[pair];
  float sine, cosine;
  sincosf(angle, &sine, &cosine);
  if (isQuery) {
    float* target = queries + size_t(row) * shape.heads * shape.headDim + base;
    target[pair] = x1 * cosine - x2 * sine;
    target[pair + half_] = x2 * cosine + x1 * sine;
    return;
  }
  const size_t slot = ((size_t(rows.cacheRows[row]) * cache.layers + layer) * cache.kvHeads + kvHead) *
                          cache.maxContext +
                      position;
  half* key = cache.keys + slot * cache.headDim;
  half* val = cache.values + slot * cache.headDim;
  const int valueBase = (shape.heads + shape.kvHeads + kvHead) * shape.headDim;
  key[pair] = __float2half_rn(x1 * cosine - x2 * sine);
  key[pair + half_] = __float2half_rn(x2 * cosine + x1 * sine);
  val[pair] = __float2half_rn(value(valueBase + pair));
  val[pair + half_] = __float2half_rn(value(valueBase + pair + half_));
}

// grid (rows, kvHeads), kAttentionThreads threads. The q heads a kv head serves are done together, so each
// key and value is read once per row; positions go by in chunks of one per thread with a running softmax.
__global__ void attentionKernel(RowMeta rows, const float* queries, AttentionShape shape, KvCacheView cache,
                                int layer, half* out) {
  LUMINET_DYNAMIC_SHARED(float, shared);
  __shared__ float runningMax[kMaxGroup], runningSum[kMaxGroup], rescale[kMaxGroup];
  constexpr int kChunk = kAttentionThreads;
  constexpr int kAccumulators = kMaxAttentionOutputs / kAttentionThreads;
  const int row = blockIdx.x;
  const int kvHead = blockIdx.y;
  const int t = threadIdx.x;
  const int group = shape.heads / shape.kvHeads;
  const int dim = shape.headDim;
  const int outputs = group * dim;
  float* q = shared;                 // [group][dim], pre-scaled
  float* weights = shared + outputs;  // [group][kChunk]

  const float* rowQueries = queries + size_t(row) * shape.heads * dim + size_t(kvHead) * outputs;
  for (int i = t; i < outputs; i += blockDim.x) q[i] = rowQueries[i] * shape.scale;
  if (t < group) {
    runningMax[t] = -INFINITY;
    runningSum[t] = 0.f;
  }
  const int keys = rows.positions[row] + 1;
  const size_t base =
      ((size_t(rows.cacheRows[row]) * cache.layers + layer) * cache.kvHeads + kvHead) * cache.maxContext * dim;
  const half* keyRows = cache.keys + base;
  const half* valueRows = cache.values + base;
  float acc[kAccumulators];
#pragma unroll
  for (int k = 0; k < kAccumulators; ++k) acc[k] = 0.f;
  __syncthreads();

  const int lane = t % kWarp, warp = t / kWarp, warps = blockDim.x / kWarp;
  for (int start = 0; start < keys; start += kChunk) {
    const int position = start + t;
    float score[kMaxGroup];
#pragma unroll
    for (int h = 0; h < kMaxGroup; ++h) score[h] = 0.f;
    if (position < keys) {
      const half* key = keyRows + size_t(position) * dim;
      for (int d = 0; d < dim; d += 8) {
        float k8[8];
        loadHalf8(key + d, k8);
#pragma unroll
        for (int h = 0; h < kMaxGroup; ++h) {
          if (h >= group) break;
          const float* qh = q + h * dim + d;
#pragma unroll
          for (int e = 0; e < 8; ++e) score[h] += k8[e] * qh[e];
        }
      }
    }
#pragma unroll
    for (int h = 0; h < kMaxGroup; ++h)
      if (h < group) weights[h * kChunk + t] = position < keys ? score[h] : -INFINITY;
    __syncthreads();
    // One warp per head: the chunk's max, its exponentials and their sum, folded into the running ones.
    for (int h = warp; h < group; h += warps) {
      float chunkMax = -INFINITY;
      for (int k = lane; k < kChunk; k += kWarp) chunkMax = fmaxf(chunkMax, weights[h * kChunk + k]);
      chunkMax = warpMax(chunkMax);
      const float previous = runningMax[h];
      const float next = fmaxf(previous, chunkMax);
      float sum = 0.f;
      for (int k = lane; k < kChunk; k += kWarp) {
        const float e = __expf(weights[h * kChunk + k] - next);
        weights[h * kChunk + k] = e;
        sum += e;
      }
      sum = warpSum(sum);
      if (lane == 0) {
        const float factor = __expf(previous - next);
        rescale[h] = factor;
        runningSum[h] = runningSum[h] * factor + sum;
        runningMax[h] = next;
      }
    }
    __syncthreads();
    const int count = min(kChunk, keys - start);
#pragma unroll
    for (int k = 0; k < kAccumulators; ++k) {
      const int o = t + k * kAttentionThreads;
      if (o < outputs) {
        const int h = o / dim, d = o % dim;
        float v = acc[k] * rescale[h];
        const float* w = weights + h * kChunk;
        const half* column = valueRows + size_t(start) * dim + d;
        for (int j = 0; j < count; ++j) v += w[j] * __half2float(column[size_t(j) * dim]);
        acc[k] = v;
      }
    }
    __syncthreads();
  }
  half* target = out + size_t(row) * shape.heads * dim + size_t(kvHead) * outputs;
#pragma unroll
  for (int k = 0; k < kAccumulators; ++k) {
    const int o = t + k * kAttentionThreads;
    if (o < outputs) target[o] = __float2half_rn(acc[k] / runningSum[o / dim]);
  }
}

__global__ void siluMulKernel(const float* gateUp, int intermediate, half* out) {
  const int row = blockIdx.y;
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= intermediate) return;
  const float gate = gateUp[size_t(row) * 2 * intermediate + i];
  const float up = gateUp[size_t(row) * 2 * intermediate + intermediate + i];
  out[size_t(row) * intermediate + i] = __float2half_rn(gate / (1.f + __expf(-gate)) * up);
}

__device__ __forceinline__ int rankOf(const LoraGroupView& group, int slot, int kind) {
  return group.ranks[(size_t(slot) * group.layers + group.layer) * kModuleKinds + kind];
}

// grid (rows, modules), 128 threads: a warp per rank row, its dot product with the row's input.
__global__ void loraShrinkKernel(RowMeta rows, LoraGroupView group, const half* x, int xStride, float* shrink) {
  LUMINET_DYNAMIC_SHARED(float, input);
  const int row = rows.order[blockIdx.x];
  const int slot = rows.slots[row];
  if (slot == 0) return;
  const LoraModuleView& module = group.modules[blockIdx.y];
  const int rank = rankOf(group, slot, module.kind);
  if (rank == 0) return;
  const half* source = x + size_t(row) * xStride;
  for (int i = threadIdx.x; i < module.in; i += blockDim.x) input[i] = __half2float(source[i]);
  __syncthreads();
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp, warps = blockDim.x / kWarp;
  const half* a = module.a + size_t(slot - 1) * group.maxRank * module.in;
  float* target = shrink + (size_t(row) * kMaxGroupModules + blockIdx.y) * group.maxRank;
  for (int r = warp; r < rank; r += warps) {
    const half* aRow = a + size_t(r) * module.in;
    float sum = 0.f;
    for (int i = lane * 8; i < module.in; i += kWarp * 8) {
      float a8[8];
      loadHalf8(aRow + i, a8);
#pragma unroll
      for (int e = 0; e < 8; ++e) sum += a8[e] * input[i + e];
    }
    sum = warpSum(sum);
    if (lane == 0) target[r] = sum;
  }
}

// grid (rows, column blocks), a thread per output column of the group.
__global__ void loraExpandKernel(RowMeta rows, LoraGroupView group, const float* shrink, float* y, int yStride) {
  const int row = rows.order[blockIdx.x];
  const int slot = rows.slots[row];
  if (slot == 0) return;
  const int column = blockIdx.y * blockDim.x + threadIdx.x;
  int m = 0;
  while (m + 1 < group.count && column >= group.modules[m + 1].column) ++m;
  const LoraModuleView& module = group.modules[m];
  const int c = column - module.column;
  if (c < 0 || c >= module.out) return;
  const int rank = rankOf(group, slot, module.kind);
  if (rank == 0) return;
  const float* s = shrink + (size_t(row) * kMaxGroupModules + m) * group.maxRank;
  const half* bt = module.scaledBT + size_t(slot - 1) * group.maxRank * module.out + c;
  float sum = 0.f;
  for (int r = 0; r < rank; ++r) sum += s[r] * __half2float(bt[size_t(r) * module.out]);
  if (group.hasBias[(size_t(slot) * group.layers + group.layer) * kModuleKinds + module.kind])
    sum += __half2float(module.scaledBias[size_t(slot - 1) * module.out + c]);
  y[size_t(row) * yStride + column] += sum;
}

__global__ void argmaxKernel(const float* logits, int vocab, int* out) {
  __shared__ float bestValues[32];
  __shared__ int bestIndices[32];
  const float* row = logits + size_t(blockIdx.x) * vocab;
  float best = -INFINITY;
  int index = vocab;
  for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
    const float v = row[i];
    if (v > best) {  // a thread visits indices in increasing order: ties keep the first
      best = v;
      index = i;
    }
  }
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    const float otherValue = __shfl_xor_sync(0xffffffffu, best, offset);
    const int otherIndex = __shfl_xor_sync(0xffffffffu, index, offset);
    if (otherValue > best || (otherValue == best && otherIndex < index)) {
      best = otherValue;
      index = otherIndex;
    }
  }
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  if (lane == 0) {
    bestValues[warp] = best;
    bestIndices[warp] = index;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < int(blockDim.x / kWarp); ++w) {
      if (bestValues[w] > best || (bestValues[w] == best && bestIndices[w] < index)) {
        best = bestValues[w];
        index = bestIndices[w];
      }
    }
    // A row of NaNs has no largest logit: answer token 0 rather than an index past the vocabulary.
    out[blockIdx.x] = index < vocab ? index : 0;
  }
}

/** An unsigned key ordered as the floats are (NaN lowest, below -inf). */
__device__ __forceinline__ uint32_t orderKey(float v) {
  if (v != v) return 0u;
  uint32_t bits;
  memcpy(&bits, &v, sizeof(bits));
  return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
}

__device__ __forceinline__ float orderedValue(float v) { return v != v ? -INFINITY : v; }

/** True when candidate a goes before b: larger value, then lower id. */
__device__ __forceinline__ bool before(float va, int ia, float vb, int ib) { return va > vb || (va == vb && ia < ib); }

// A block per row, kMaxCandidates threads. The count-th largest key comes from a radix select (four
// byte-wide histogram passes); keys above it are taken as found, keys equal to it lowest ids first (a prefix
// count over contiguous chunks); a bitonic sort orders the candidates; a last pass sums the exponentials.
__global__ void topCandidatesKernel(const float* logits, int vocab, int count, const float* temperatures, int* ids,
                                    float* values, float* logSumExp) {
  __shared__ unsigned histogram[256];
  __shared__ unsigned chosenBin, stillNeeded;
  __shared__ float candidateValues[kMaxCandidates];
  __shared__ int candidateIds[kMaxCandidates];
  __shared__ unsigned taken;
  __shared__ unsigned equalBefore[kMaxCandidates];
  __shared__ float scratch[32];
  const int t = threadIdx.x;
  const int threads = blockDim.x;
  const float* row = logits + size_t(blockIdx.x) * vocab;

  uint32_t prefix = 0, prefixMask = 0;
  if (t == 0) stillNeeded = unsigned(count);
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int b = t; b < 256; b += threads) histogram[b] = 0;
    __syncthreads();
    for (int i = t; i < vocab; i += threads) {
      const uint32_t key = orderKey(row[i]);
      if ((key & prefixMask) == prefix) atomicAdd(&histogram[(key >> shift) & 255u], 1u);
    }
    __syncthreads();
    if (t == 0) {
      unsigned needed = stillNeeded;
      int bin = 255;
      for (; bin > 0 && histogram[bin] < needed; --bin) needed -= histogram[bin];
      chosenBin = unsigned(bin);
      stillNeeded = needed;
    }
    __syncthreads();
    prefix |= chosenBin << shift;
    prefixMask |= 255u << shift;
  }
  // `prefix` is the count-th largest key; stillNeeded of the keys equal to it belong to the candidates.
  const unsigned equalWanted = stillNeeded;
  if (t == 0) taken = 0;
  __syncthreads();
  for (int i = t; i < vocab; i += threads) {
    if (orderKey(row[i]) > prefix) {
      const unsigned at = atomicAdd(&taken, 1u);
      candidateValues[at] = orderedValue(row[i]);
      candidateIds[at] = i;
    }
  }
  const int chunk = (vocab + threads - 1) / threads;
  const int begin = min(vocab, t * chunk), end = min(vocab, begin + chunk);
  unsigned equal = 0;
  for (int i = begin; i < end; ++i) equal += orderKey(row[i]) == prefix ? 1u : 0u;
  equalBefore[t] = equal;
  __syncthreads();
  if (t == 0) {
    unsigned sum = 0;
    for (int k = 0; k < threads; ++k) {
      const unsigned own = equalBefore[k];
      equalBefore[k] = sum;
      sum += own;
    }
  }
  __syncthreads();
  const unsigned greater = unsigned(count) - equalWanted;
  unsigned rank = equalBefore[t];
  for (int i = begin; i < end && rank < equalWanted; ++i) {
    if (orderKey(row[i]) != prefix) continue;
    candidateValues[greater + rank] = orderedValue(row[i]);
    candidateIds[greater + rank] = i;
    ++rank;
  }
  // Pad to the sort's power of two with entries that sort last.
  int width = 1;
  while (width < count) width *= 2;
  for (int k = count + t; k < width; k += threads) {
    candidateValues[k] = -INFINITY;
    candidateIds[k] = 0x7fffffff;
  }
  __syncthreads();
  for (int size = 2; size <= width; size *= 2) {
    for (int stride = size / 2; stride > 0; stride /= 2) {
      for (int k = t; k < width; k += threads) {
        const int partner = k ^ stride;
        if (partner > k) {
          const bool descending = (k & size) == 0;
          const bool swap = descending ? before(candidateValues[partner], candidateIds[partner], candidateValues[k],
                                                candidateIds[k])
                                       : before(candidateValues[k], candidateIds[k], candidateValues[partner],
                                                candidateIds[partner]);
          if (swap) {
            const float v = candidateValues[k];
            candidateValues[k] = candidateValues[partner];
            candidateValues[partner] = v;
            const int id = candidateIds[k];
            candidateIds[k] = candidateIds[partner];
            candidateIds[partner] = id;
          }
        }
      }
      __syncthreads();
    }
  }
  const float temperature = temperatures[blockIdx.x] > 0.f ? temperatures[blockIdx.x] : 1.f;
  const float top = candidateValues[0];
  float sum = 0.f;
  for (int i = t; i < vocab; i += threads) {
    const float v = row[i];
    if (v == v) sum += __expf((v - top) / temperature);
  }
  sum = blockSum(sum, scratch);
  for (int k = t; k < count; k += threads) {
    ids[size_t(blockIdx.x) * count + k] = candidateIds[k];
    values[size_t(blockIdx.x) * count + k] = candidateValues[k];
  }
  if (t == 0) logSumExp[blockIdx.x] = top / temperature + logf(sum);
}

void checkLaunch(const char* kernel) {
  const cudaError_t status = cudaGetLastError();
  if (status != cudaSuccess) checkCuda(status, kernel, __FILE__, __LINE__);
}

}  // namespace

void configureLoraShrink(int widestInput) {
  CUDA_CHECK(cudaFuncSetAttribute(loraShrinkKernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  int(widestInput * sizeof(float))));
}

void launchConvertToHalf(const void* source, SourceDtype dtype, half* target, size_t count, cudaStream_t stream) {
  if (count == 0) return;
  const int blocks = int(std::min<size_t>((count + 255) / 256, 65535));
  LUMINET_LAUNCH(convertToHalfKernel, blocks, 256, 0, stream)(source, int(dtype), target, count);
  checkLaunch("convertToHalfKernel");
}

void launchEmbed(const RowMeta& rows, int rowCount, const half* table, int hidden, float* residual,
                 cudaStream_t stream) {
  LUMINET_LAUNCH(embedKernel, rowCount, 256, 0, stream)(rows, table, hidden, residual);
  checkLaunch("embedKernel");
}

void launchRmsNorm(const float* x, const int* gather, int rowCount, int hidden, const half* weight, float eps,
                   half* out, cudaStream_t stream) {
  LUMINET_LAUNCH(rmsNormKernel, rowCount, 512, 0, stream)(x, gather, hidden, weight, eps, out);
  checkLaunch("rmsNormKernel");
}

void launchRotaryAndCache(const RowMeta& rows, int rowCount, const float* qkv, const half* qkvBias,
                          const HeadNorms& norms, const float* invFreq, const AttentionShape& shape,
                          const KvCacheView& cache, int layer, float* queries, cudaStream_t stream) {
  const dim3 grid(rowCount, shape.heads + shape.kvHeads);
  const int threads = ((shape.headDim / 2 + kWarp - 1) / kWarp) * kWarp;
  LUMINET_LAUNCH(rotaryAndCacheKernel, grid, threads, 0, stream)(rows, qkv, qkvBias, norms, invFreq, shape, cache,
                                                                 layer, queries);
  checkLaunch("rotaryAndCacheKernel");
}

void launchAttention(const RowMeta& rows, int rowCount, const float* queries, const AttentionShape& shape,
                     const KvCacheView& cache, int layer, half* out, cudaStream_t stream) {
  const int group = shape.heads / shape.kvHeads;
  const size_t sharedBytes = size_t(group) * (shape.headDim + kAttentionThreads) * sizeof(float);
  const dim3 grid(rowCount, shape.kvHeads);
  LUMINET_LAUNCH(attentionKernel, grid, kAttentionThreads, sharedBytes, stream)(rows, queries, shape, cache, layer, out);
  checkLaunch("attentionKernel");
}

void launchSiluMul(const float* gateUp, int rowCount, int intermediate, half* out, cudaStream_t stream) {
  const dim3 grid((intermediate + 255) / 256, rowCount);
  LUMINET_LAUNCH(siluMulKernel, grid, 256, 0, stream)(gateUp, intermediate, out);
  checkLaunch("siluMulKernel");
}

void launchLoraShrink(const RowMeta& rows, int rowCount, const LoraGroupView& group, const half* x, int xStride,
                      float* shrink, cudaStream_t stream) {
  int widest = 0;
  for (int m = 0; m < group.count; ++m) widest = std::max(widest, group.modules[m].in);
  const dim3 grid(rowCount, group.count);
  LUMINET_LAUNCH(loraShrinkKernel, grid, 128, widest * sizeof(float), stream)(rows, group, x, xStride, shrink);
  checkLaunch("loraShrinkKernel");
}

void launchLoraExpand(const RowMeta& rows, int rowCount, const LoraGroupView& group, const float* shrink,
                      float* y, int yStride, cudaStream_t stream) {
  const LoraModuleView& last = group.modules[group.count - 1];
  const int columns = last.column + last.out;
  const dim3 grid(rowCount, (columns + 255) / 256);
  LUMINET_LAUNCH(loraExpandKernel, grid, 256, 0, stream)(rows, group, shrink, y, yStride);
  checkLaunch("loraExpandKernel");
}

void launchTopCandidates(const float* logits, int rowCount, int vocab, int count, const float* temperatures, int* ids,
                         float* values, float* logSumExp, cudaStream_t stream) {
  LUMINET_LAUNCH(topCandidatesKernel, rowCount, kMaxCandidates, 0, stream)(logits, vocab, count, temperatures, ids,
                                                                            values, logSumExp);
  checkLaunch("topCandidatesKernel");
}

// A thread per entry; a row lists each token once, so no two threads touch one logit. Doubles, as the
// host sampler computes in JavaScript numbers and stores float32.
__global__ void penaltiesKernel(float* logits, int vocab, PenaltyView penalties) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= penalties.count) return;
  float* logit = logits + size_t(penalties.rows[i]) * vocab + penalties.tokens[i];
  float value = *logit;
  const double repetition = penalties.repetition[i];
  if (repetition != 1.0) {
    const double l = value;
    value = float(l > 0 ? l / repetition : l * repetition);
  }
  *logit = float(double(value) - penalties.presence[i] - penalties.frequency[i]);
}

void launchPenalties(float* logits, int vocab, const PenaltyView& penalties, cudaStream_t stream) {
  if (penalties.count == 0) return;
  LUMINET_LAUNCH(penaltiesKernel, (penalties.count + 255) / 256, 256, 0, stream)(logits, vocab, penalties);
  checkLaunch("penaltiesKernel");
}

void launchArgmax(const float* logits, int rowCount, int vocab, int* out, cudaStream_t stream) {
  LUMINET_LAUNCH(argmaxKernel, rowCount, 1024, 0, stream)(logits, vocab, out);
  checkLaunch("argmaxKernel");
}

}  // namespace luminet
