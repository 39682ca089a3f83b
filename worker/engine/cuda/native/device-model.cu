#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <numeric>
#include <stdexcept>

#include "device-model.h"

namespace luminet {

namespace {

constexpr const char* kKindNames[kModuleKinds] = {"q", "k", "v", "o", "gate", "up", "down"};
enum Kind { kQ = 0, kK, kV, kO, kGate, kUp, kDown };
/** Captured graphs kept at once; steady decoding reuses a handful of row counts. */
constexpr size_t kMaxGraphs = 64;
constexpr size_t kCublasWorkspaceBytes = 32u << 20;

std::string layerName(int layer, const char* part) { return "layers." + std::to_string(layer) + "." + part; }

void require(bool condition, const std::string& message) {
  if (!condition) throw std::invalid_argument(message);
}

}  // namespace

DeviceModel::DeviceModel(ModelSpec spec) : spec_(std::move(spec)), graphsEnabled_(spec_.cudaGraphs) {
  const ModelSpec& s = spec_;
  require(s.layers > 0 && s.hidden > 0 && s.intermediate > 0 && s.heads > 0 && s.kvHeads > 0 && s.vocab > 0,
          "model sizes must be positive");
  require(s.heads % s.kvHeads == 0, "heads must be a multiple of kvHeads");
  require(s.heads / s.kvHeads <= kMaxGroup, "at most " + std::to_string(kMaxGroup) + " q heads per kv head");
  require(s.headDim % 8 == 0 && s.headDim <= 256, "headDim must be a multiple of 8, at most 256");
  require((s.heads / s.kvHeads) * s.headDim <= kMaxAttentionOutputs, "q heads per kv head × headDim exceeds 1024");
  require(s.hidden % 8 == 0 && s.intermediate % 8 == 0, "hidden and intermediate sizes must be multiples of 8");
  require(int(s.invFreq.size()) == s.headDim / 2, "invFreq must hold headDim/2 values");
  require(s.maxContext > 0 && s.cacheRows > 0 && s.maxStepTokens > 0, "cache and step sizes must be positive");
  require(s.slots >= 0 && s.maxRank > 0, "slots must be ≥ 0 and maxRank > 0");

  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0)
    throw CudaError("no CUDA device visible to this process");
  require(s.device >= 0 && s.device < devices,
          "CUDA device " + std::to_string(s.device) + " does not exist (" + std::to_string(devices) + " visible)");
  CUDA_CHECK(cudaSetDevice(s.device));
  cudaDeviceProp properties{};
  CUDA_CHECK(cudaGetDeviceProperties(&properties, s.device));
  deviceName_ = properties.name;
  cublas_ = &loadCublas();

  CUDA_CHECK(cudaStreamCreateWithFlags(&compute_, cudaStreamNonBlocking));
  CUDA_CHECK(cudaStreamCreateWithFlags(&loads_, cudaStreamNonBlocking));
  checkCublas(cublas_->create(&handle_), "cublasCreate");
  checkCublas(cublas_->setStream(handle_, compute_), "cublasSetStream");
  // A fixed workspace: cuBLAS must not allocate while a step is being captured as a graph.
  cublasWorkspace_ = DeviceBuffer(kCublasWorkspaceBytes);
  checkCublas(cublas_->setWorkspace(handle_, cublasWorkspace_.as<void>(), kCublasWorkspaceBytes),
              "cublasSetWorkspace");

  invFreq_ = DeviceBuffer(s.invFreq.size() * sizeof(float));
  CUDA_CHECK(cudaMemcpy(invFreq_.as<float>(), s.invFreq.data(), invFreq_.bytes(), cudaMemcpyHostToDevice));
  allocateWeights();
  keys_ = DeviceBuffer(kvElements() * sizeof(half));
  values_ = DeviceBuffer(kvElements() * sizeof(half));
  allocateBanks();
  allocateScratch();
}

DeviceModel::~DeviceModel() {
  cudaSetDevice(spec_.device);
  if (compute_) cudaStreamSynchronize(compute_);
  if (loads_) cudaStreamSynchronize(loads_);
  for (auto& [key, graph] : graphs_) cudaGraphExecDestroy(graph);
  if (handle_) cublas_->destroy(handle_);
  if (compute_) cudaStreamDestroy(compute_);
  if (loads_) cudaStreamDestroy(loads_);
}

size_t DeviceModel::kvElements() const {
  return size_t(spec_.cacheRows) * spec_.layers * spec_.kvHeads * spec_.maxContext * spec_.headDim;
}

void DeviceModel::allocateWeights() {
  const ModelSpec& s = spec_;
  const size_t qkvRows = size_t(s.heads + 2 * s.kvHeads) * s.headDim;
  auto add = [&](const std::string& name, size_t elements) {
    Weight& w = weights_[name];
    w.buffer = DeviceBuffer(elements * sizeof(half));
    w.elements = elements;
  };
  add("embed", size_t(s.vocab) * s.hidden);
  if (!s.tieWordEmbeddings) add("lm_head", size_t(s.vocab) * s.hidden);
  add("final_norm", s.hidden);
  for (int l = 0; l < s.layers; ++l) {
    add(layerName(l, "attn_norm"), s.hidden);
    add(layerName(l, "qkv"), qkvRows * s.hidden);
    if (s.qkvBias) add(layerName(l, "qkv_bias"), qkvRows);
    if (s.qkNorm) {
      add(layerName(l, "q_norm"), s.headDim);
      add(layerName(l, "k_norm"), s.headDim);
    }
    add(layerName(l, "o"), size_t(s.hidden) * s.heads * s.headDim);
    add(layerName(l, "mlp_norm"), s.hidden);
    add(layerName(l, "gate_up"), size_t(2) * s.intermediate * s.hidden);
    add(layerName(l, "down"), size_t(s.hidden) * s.intermediate);
  }
}

void DeviceModel::allocateBanks() {
  const ModelSpec& s = spec_;
  const int attention = s.heads * s.headDim, kv = s.kvHeads * s.headDim;
  const int ins[kModuleKinds] = {s.hidden, s.hidden, s.hidden, attention, s.hidden, s.hidden, s.intermediate};
  const int outs[kModuleKinds] = {attention, kv, kv, s.hidden, s.intermediate, s.intermediate, s.hidden};
  // Banks hold slots 1..slots (slot 0, no adapter, has no rows); the rank tables index slot 0 too, as 0s.
  const size_t slotRows = size_t(s.slots);
  banks_.resize(size_t(s.layers) * kModuleKinds);
  for (int l = 0; l < s.layers; ++l) {
    for (int k = 0; k < kModuleKinds; ++k) {
      LoraBank& bank = banks_[size_t(l) * kModuleKinds + k];
      bank.in = ins[k];
      bank.out = outs[k];
      bank.a = DeviceBuffer(slotRows * s.maxRank * bank.in * sizeof(half));
      bank.scaledBT = DeviceBuffer(slotRows * s.maxRank * bank.out * sizeof(half));
      bank.scaledBias = DeviceBuffer(slotRows * bank.out * sizeof(half));
    }
  }
  const size_t entries = (slotRows + 1) * s.layers * kModuleKinds;
  ranks_ = DeviceBuffer(entries * sizeof(int));
  hasBias_ = DeviceBuffer(entries);
  CUDA_CHECK(cudaMemset(ranks_.as<void>(), 0, ranks_.bytes()));
  CUDA_CHECK(cudaMemset(hasBias_.as<void>(), 0, hasBias_.bytes()));
  // The shrink kernel keeps one input row in shared memory; wide MLPs need more than the default 48 KiB.
  configureLoraShrink(std::max(s.hidden, s.intermediate));
}

void DeviceModel::allocateScratch() {
  const ModelSpec& s = spec_;
  const size_t t = s.maxStepTokens;
  const size_t qkvWidth = size_t(s.heads + 2 * s.kvHeads) * s.headDim;
  const size_t attention = size_t(s.heads) * s.headDim;
  meta_ = DeviceBuffer(6 * t * sizeof(int));
  residual_ = DeviceBuffer(t * s.hidden * sizeof(float));
  normed_ = DeviceBuffer(t * s.hidden * sizeof(half));
  qkv_ = DeviceBuffer(t * qkvWidth * sizeof(float));
  queries_ = DeviceBuffer(t * attention * sizeof(float));
  attention_ = DeviceBuffer(t * attention * sizeof(half));
  gateUp_ = DeviceBuffer(t * 2 * s.intermediate * sizeof(float));
  activation_ = DeviceBuffer(t * s.intermediate * sizeof(half));
  shrink_ = DeviceBuffer(t * kMaxGroupModules * s.maxRank * sizeof(float));
  lmInput_ = DeviceBuffer(t * s.hidden * sizeof(half));
  logits_ = DeviceBuffer(t * s.vocab * sizeof(float));
  argmax_ = DeviceBuffer(t * sizeof(int));
  temperatures_ = DeviceBuffer(t * sizeof(float));
  candidateIds_ = DeviceBuffer(t * kMaxCandidates * sizeof(int));
  candidateLogits_ = DeviceBuffer(t * kMaxCandidates * sizeof(float));
  logSumExp_ = DeviceBuffer(t * sizeof(float));
  hostTemperatures_ = PinnedBuffer(t * sizeof(float));
  hostCandidateIds_ = PinnedBuffer(t * kMaxCandidates * sizeof(int));
  hostCandidateLogits_ = PinnedBuffer(t * kMaxCandidates * sizeof(float));
  hostLogSumExp_ = PinnedBuffer(t * sizeof(float));
  hostMeta_ = PinnedBuffer(6 * t * sizeof(int));
  hostArgmax_ = PinnedBuffer(t * sizeof(int));
  hostLogits_ = PinnedBuffer(t * s.vocab * sizeof(float));
}

DeviceModel::Weight& DeviceModel::weight(const std::string& name) {
  auto found = weights_.find(name);
  if (found == weights_.end()) throw std::invalid_argument("no weight named " + name + " in this model");
  return found->second;
}

const half* DeviceModel::weightData(const std::string& name) const {
  return weights_.at(name).buffer.as<half>();
}

void DeviceModel::setWeight(const std::string& name, const void* data, size_t bytes, SourceDtype dtype,
                            size_t offset) {
  Weight& target = weight(name);
  const size_t width = dtype == SourceDtype::F32 ? 4 : 2;
  require(bytes % width == 0, name + ": " + std::to_string(bytes) + " bytes is not a whole number of elements");
  const size_t count = bytes / width;
  require(offset + count <= target.elements, name + ": elements " + std::to_string(offset) + ".." +
                                                  std::to_string(offset + count) + " exceed its " +
                                                  std::to_string(target.elements));
  std::lock_guard<std::mutex> lock(stepMutex_);
  CUDA_CHECK(cudaSetDevice(spec_.device));
  DeviceBuffer staging(bytes);
  CUDA_CHECK(cudaMemcpyAsync(staging.as<void>(), data, bytes, cudaMemcpyHostToDevice, compute_));
  launchConvertToHalf(staging.as<void>(), dtype, target.buffer.as<half>() + offset, count, compute_);
  CUDA_CHECK(cudaStreamSynchronize(compute_));
  target.uploaded += count;
  weightsComplete_ = false;
}

void DeviceModel::checkWeightsComplete() {
  if (weightsComplete_) return;
  std::string missing;
  for (const auto& [name, w] : weights_)
    if (w.uploaded < w.elements) missing += " " + name;
  if (!missing.empty()) throw std::logic_error("weights not (fully) uploaded:" + missing);
  weightsComplete_ = true;
}

void DeviceModel::writeAdapter(int slot, const std::vector<AdapterModuleData>& modules) {
  const ModelSpec& s = spec_;
  require(slot >= 1 && slot <= s.slots, "slot " + std::to_string(slot) + " is out of range 1.." +
                                            std::to_string(s.slots));
  size_t floats = 0;
  for (const AdapterModuleData& m : modules) {
    require(m.layer >= 0 && m.layer < s.layers, "adapter module layer " + std::to_string(m.layer) + " out of range");
    require(m.kind >= 0 && m.kind < kModuleKinds, "adapter module kind " + std::to_string(m.kind) + " out of range");
    const LoraBank& bank = banks_[size_t(m.layer) * kModuleKinds + m.kind];
    const std::string where = layerName(m.layer, kKindNames[m.kind]);
    require(m.rank >= 1 && m.rank <= s.maxRank,
            where + ": rank " + std::to_string(m.rank) + " outside 1.." + std::to_string(s.maxRank));
    require(m.aCount == size_t(m.rank) * bank.in, where + ": A must hold rank × " + std::to_string(bank.in));
    require(m.scaledBTCount == size_t(m.rank) * bank.out,
            where + ": scaled Bᵀ must hold rank × " + std::to_string(bank.out));
    require(!m.scaledBias || m.scaledBiasCount == size_t(bank.out),
            where + ": scaled bias must hold " + std::to_string(bank.out));
    floats += m.aCount + m.scaledBTCount + (m.scaledBias ? m.scaledBiasCount : 0);
  }
  const size_t entries = size_t(s.layers) * kModuleKinds;
  std::vector<int> ranks(entries, 0);
  std::vector<unsigned char> hasBias(entries, 0);

  std::lock_guard<std::mutex> lock(loadMutex_);
  CUDA_CHECK(cudaSetDevice(s.device));
  const size_t bytes = floats * sizeof(float);
  if (hostStaging_.bytes() < bytes) {
    hostStaging_ = PinnedBuffer(bytes);
    deviceStaging_ = DeviceBuffer(bytes);
  }
  // Host copy into pinned memory, one asynchronous upload, then fp32 → fp16 into the slot's bank rows.
  float* host = hostStaging_.as<float>();
  size_t at = 0;
  auto stage = [&](const float* source, size_t count) {
    std::memcpy(host + at, source, count * sizeof(float));
    const size_t start = at;
    at += count;
    return start;
  };
  struct Pending {
    size_t from, count;
    half* to;
  };
  std::vector<Pending> pending;
  for (const AdapterModuleData& m : modules) {
    LoraBank& bank = banks_[size_t(m.layer) * kModuleKinds + m.kind];
    const size_t slotA = size_t(slot - 1) * s.maxRank * bank.in, slotB = size_t(slot - 1) * s.maxRank * bank.out;
    pending.push_back({stage(m.a, m.aCount), m.aCount, bank.a.as<half>() + slotA});
    pending.push_back({stage(m.scaledBT, m.scaledBTCount), m.scaledBTCount, bank.scaledBT.as<half>() + slotB});
    if (m.scaledBias)
      pending.push_back({stage(m.scaledBias, m.scaledBiasCount), m.scaledBiasCount,
                         bank.scaledBias.as<half>() + size_t(slot - 1) * bank.out});
    ranks[size_t(m.layer) * kModuleKinds + m.kind] = m.rank;
    hasBias[size_t(m.layer) * kModuleKinds + m.kind] = m.scaledBias ? 1 : 0;
  }
  CUDA_CHECK(cudaMemcpyAsync(deviceStaging_.as<float>(), host, bytes, cudaMemcpyHostToDevice, loads_));
  for (const Pending& p : pending)
    launchConvertToHalf(deviceStaging_.as<float>() + p.from, SourceDtype::F32, p.to, p.count, loads_);
  // The rank table goes last on the same stream: a step sees the slot's new ranks only with its new rows.
  CUDA_CHECK(cudaMemcpyAsync(ranks_.as<int>() + size_t(slot) * entries, ranks.data(), entries * sizeof(int),
                             cudaMemcpyHostToDevice, loads_));
  CUDA_CHECK(cudaMemcpyAsync(hasBias_.as<unsigned char>() + size_t(slot) * entries, hasBias.data(), entries,
                             cudaMemcpyHostToDevice, loads_));
  CUDA_CHECK(cudaStreamSynchronize(loads_));
}

void DeviceModel::clearSlot(int slot) {
  require(slot >= 1 && slot <= spec_.slots,
          "slot " + std::to_string(slot) + " is out of range 1.." + std::to_string(spec_.slots));
  std::lock_guard<std::mutex> lock(loadMutex_);
  CUDA_CHECK(cudaSetDevice(spec_.device));
  const size_t entries = size_t(spec_.layers) * kModuleKinds;
  CUDA_CHECK(cudaMemsetAsync(ranks_.as<int>() + size_t(slot) * entries, 0, entries * sizeof(int), loads_));
  CUDA_CHECK(cudaStreamSynchronize(loads_));
}

void DeviceModel::copyCacheRow(int from, int to) {
  const int rows = spec_.cacheRows;
  require(from >= 0 && from < rows && to >= 0 && to < rows,
          "cache rows " + std::to_string(from) + " and " + std::to_string(to) + " must lie in 0.." +
              std::to_string(rows - 1));
  if (from == to) return;
  std::lock_guard<std::mutex> lock(stepMutex_);
  CUDA_CHECK(cudaSetDevice(spec_.device));
  // A row is contiguous in both caches: [layers][kvHeads][maxContext][headDim].
  const size_t row = kvElements() / size_t(rows);
  for (DeviceBuffer* cache : {&keys_, &values_}) {
    half* base = cache->as<half>();
    CUDA_CHECK(cudaMemcpyAsync(base + size_t(to) * row, base + size_t(from) * row, row * sizeof(half),
                               cudaMemcpyDeviceToDevice, compute_));
  }
  CUDA_CHECK(cudaStreamSynchronize(compute_));
}

void DeviceModel::validate(const StepInput& in) const {
  const ModelSpec& s = spec_;
  const size_t rows = in.tokens.size();
  require(rows > 0, "a step needs at least one row");
  require(rows <= size_t(s.maxStepTokens),
          std::to_string(rows) + " rows exceed the step's " + std::to_string(s.maxStepTokens));
  require(in.cacheRows.size() == rows && in.positions.size() == rows && in.slots.size() == rows,
          "tokens, cacheRows, positions and slots must have one entry per row");
  require(!in.logitRows.empty() && in.logitRows.size() <= rows, "logitRows must name 1..rows rows");
  for (size_t i = 0; i < rows; ++i) {
    require(in.tokens[i] >= 0 && in.tokens[i] < s.vocab, "token " + std::to_string(in.tokens[i]) + " out of range");
    require(in.cacheRows[i] >= 0 && in.cacheRows[i] < s.cacheRows,
            "cache row " + std::to_string(in.cacheRows[i]) + " out of range");
    require(in.positions[i] >= 0 && in.positions[i] < s.maxContext,
            "position " + std::to_string(in.positions[i]) + " outside the " + std::to_string(s.maxContext) +
                "-token context");
    require(in.slots[i] >= 0 && in.slots[i] <= s.slots, "slot " + std::to_string(in.slots[i]) + " out of range");
  }
  for (int r : in.logitRows) require(r >= 0 && size_t(r) < rows, "logit row " + std::to_string(r) + " out of range");
  require(in.candidates >= 0 && in.candidates <= std::min(kMaxCandidates, s.vocab),
          "candidates must be 0.." + std::to_string(std::min(kMaxCandidates, s.vocab)));
  require(in.candidates == 0 || in.temperatures.size() == in.logitRows.size(),
          "temperatures must have one entry per logit row");
  const size_t penalties = in.penaltyRows.size();
  require(in.penaltyTokens.size() == penalties && in.penaltyRepetition.size() == penalties &&
              in.penaltyPresence.size() == penalties && in.penaltyFrequency.size() == penalties,
          "penalty rows, tokens, repetition, presence and frequency must have one entry each");
  // Two entries for one logit would race on the device. Entries come grouped by row, rows ascending, so
  // the last row that listed each token tells a repeat in one pass.
  std::vector<int> listedBy(penalties > 0 ? s.vocab : 0, -1);
  for (size_t i = 0; i < penalties; ++i) {
    const int row = in.penaltyRows[i], token = in.penaltyTokens[i];
    require(row >= 0 && size_t(row) < in.logitRows.size(), "penalty row " + std::to_string(row) + " out of range");
    require(i == 0 || row >= in.penaltyRows[i - 1], "penalty entries must be grouped by row, rows ascending");
    require(token >= 0 && token < s.vocab, "penalty token " + std::to_string(token) + " out of range");
    require(in.penaltyRepetition[i] > 0, "repetition penalties must be > 0");
    require(listedBy[token] != row, "a logit row lists a penalty token twice");
    listedBy[token] = row;
  }
}

const float* DeviceModel::enqueuePenalties(const StepInput& in, int logitCount) {
  const size_t count = in.penaltyRows.size();
  const size_t rowBytes = size_t(logitCount) * spec_.vocab * sizeof(float);
  if (penalized_.bytes() < rowBytes)
    penalized_ = DeviceBuffer(size_t(spec_.maxStepTokens) * spec_.vocab * sizeof(float));
  // Entries packed as rows and tokens (ints), then repetition, presence and frequency (doubles, 8-aligned).
  const size_t intBytes = (2 * count * sizeof(int) + 7) / 8 * 8;
  const size_t bytes = intBytes + 3 * count * sizeof(double);
  if (hostPenalties_.bytes() < bytes) {
    hostPenalties_ = PinnedBuffer(2 * bytes);
    devicePenalties_ = DeviceBuffer(2 * bytes);
  }
  char* host = hostPenalties_.as<char>();
  std::copy(in.penaltyRows.begin(), in.penaltyRows.end(), reinterpret_cast<int*>(host));
  std::copy(in.penaltyTokens.begin(), in.penaltyTokens.end(), reinterpret_cast<int*>(host) + count);
  double* doubles = reinterpret_cast<double*>(host + intBytes);
  std::copy(in.penaltyRepetition.begin(), in.penaltyRepetition.end(), doubles);
  std::copy(in.penaltyPresence.begin(), in.penaltyPresence.end(), doubles + count);
  std::copy(in.penaltyFrequency.begin(), in.penaltyFrequency.end(), doubles + 2 * count);
  CUDA_CHECK(cudaMemcpyAsync(devicePenalties_.as<void>(), host, bytes, cudaMemcpyHostToDevice, compute_));
  CUDA_CHECK(
      cudaMemcpyAsync(penalized_.as<float>(), logits_.as<float>(), rowBytes, cudaMemcpyDeviceToDevice, compute_));
  const char* device = devicePenalties_.as<char>();
  const double* deviceDoubles = reinterpret_cast<const double*>(device + intBytes);
  const PenaltyView view{reinterpret_cast<const int*>(device), reinterpret_cast<const int*>(device) + count,
                         deviceDoubles, deviceDoubles + count, deviceDoubles + 2 * count, int(count)};
  launchPenalties(penalized_.as<float>(), spec_.vocab, view, compute_);
  launchArgmax(penalized_.as<float>(), logitCount, spec_.vocab, argmax_.as<int>(), compute_);
  return penalized_.as<float>();
}

StepOutput DeviceModel::step(const StepInput& in) {
  validate(in);
  std::lock_guard<std::mutex> lock(stepMutex_);
  checkWeightsComplete();
  CUDA_CHECK(cudaSetDevice(spec_.device));
  const int rows = int(in.tokens.size()), logitCount = int(in.logitRows.size());
  std::vector<int> order(rows);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return in.slots[a] < in.slots[b]; });
  const bool anyAdapter = std::any_of(in.slots.begin(), in.slots.end(), [](int s) { return s != 0; });

  // One upload of the step's metadata; the launches read it from fixed places.
  int* host = hostMeta_.as<int>();
  const std::vector<int>* parts[] = {&in.tokens, &in.cacheRows, &in.positions, &in.slots, &order};
  for (const std::vector<int>* part : parts) {
    std::copy(part->begin(), part->end(), host);
    host += rows;
  }
  std::copy(in.logitRows.begin(), in.logitRows.end(), host);
  const int* device = meta_.as<int>();
  const RowMeta meta{device, device + rows, device + 2 * rows, device + 3 * rows, device + 4 * rows,
                     device + 5 * rows};
  CUDA_CHECK(cudaMemcpyAsync(meta_.as<int>(), hostMeta_.as<int>(), (5 * size_t(rows) + logitCount) * sizeof(int),
                             cudaMemcpyHostToDevice, compute_));
  StepOutput out;
  const GraphKey key{rows, logitCount, anyAdapter};
  if (in.profile) {
    out.phases = profileForward(meta, rows, logitCount, anyAdapter);
  } else if (graphsEnabled_ && ++timesSeen_[key] > 1 && runGraph(key, meta)) {
    // replayed
  } else {
    enqueueForward(meta, rows, logitCount, anyAdapter);
  }
  // What the argmax (taken again here) and the candidates read: the logits after the step's penalties.
  const float* picked = in.penaltyRows.empty() ? logits_.as<float>() : enqueuePenalties(in, logitCount);

  CUDA_CHECK(cudaMemcpyAsync(hostArgmax_.as<int>(), argmax_.as<int>(), logitCount * sizeof(int),
                             cudaMemcpyDeviceToHost, compute_));
  const size_t logitValues = size_t(logitCount) * spec_.vocab;
  if (in.returnLogits)
    CUDA_CHECK(cudaMemcpyAsync(hostLogits_.as<float>(), logits_.as<float>(), logitValues * sizeof(float),
                               cudaMemcpyDeviceToHost, compute_));
  const size_t candidateValues = size_t(logitCount) * in.candidates;
  if (in.candidates > 0) {
    std::copy(in.temperatures.begin(), in.temperatures.end(), hostTemperatures_.as<float>());
    CUDA_CHECK(cudaMemcpyAsync(temperatures_.as<float>(), hostTemperatures_.as<float>(), logitCount * sizeof(float),
                               cudaMemcpyHostToDevice, compute_));
    launchTopCandidates(picked, logitCount, spec_.vocab, in.candidates, temperatures_.as<float>(),
                        candidateIds_.as<int>(), candidateLogits_.as<float>(), logSumExp_.as<float>(), compute_);
    CUDA_CHECK(cudaMemcpyAsync(hostCandidateIds_.as<int>(), candidateIds_.as<int>(), candidateValues * sizeof(int),
                               cudaMemcpyDeviceToHost, compute_));
    CUDA_CHECK(cudaMemcpyAsync(hostCandidateLogits_.as<float>(), candidateLogits_.as<float>(),
                               candidateValues * sizeof(float), cudaMemcpyDeviceToHost, compute_));
    CUDA_CHECK(cudaMemcpyAsync(hostLogSumExp_.as<float>(), logSumExp_.as<float>(), logitCount * sizeof(float),
                               cudaMemcpyDeviceToHost, compute_));
  }
  CUDA_CHECK(cudaStreamSynchronize(compute_));
  lastLogitCount_ = logitCount;
  out.argmax.assign(hostArgmax_.as<int>(), hostArgmax_.as<int>() + logitCount);
  if (in.returnLogits) out.logits.assign(hostLogits_.as<float>(), hostLogits_.as<float>() + logitValues);
  if (in.candidates > 0) {
    out.candidateIds.assign(hostCandidateIds_.as<int>(), hostCandidateIds_.as<int>() + candidateValues);
    out.candidateLogits.assign(hostCandidateLogits_.as<float>(), hostCandidateLogits_.as<float>() + candidateValues);
    out.logSumExp.assign(hostLogSumExp_.as<float>(), hostLogSumExp_.as<float>() + logitCount);
  }
  return out;
}

bool DeviceModel::runGraph(const GraphKey& key, const RowMeta& meta) {
  auto found = graphs_.find(key);
  if (found == graphs_.end()) {
    if (graphs_.size() >= kMaxGraphs) {
      cudaGraphExecDestroy(graphs_.begin()->second);
      graphs_.erase(graphs_.begin());
    }
    // Captured on the second sight of a shape: the first ran eagerly, so cuBLAS has loaded its kernels.
    cudaGraphExec_t exec = nullptr;
    try {
      exec = capture(key, meta);
    } catch (const std::exception& error) {
      // A capture this runtime or cuBLAS refuses must not stop serving: steps run eagerly from now on.
      std::fprintf(stderr, "luminet cuda: CUDA graphs off, capture failed: %s\n", error.what());
      graphsEnabled_ = false;
      cudaGetLastError();
      return false;
    }
    found = graphs_.emplace(key, exec).first;
  }
  CUDA_CHECK(cudaGraphLaunch(found->second, compute_));
  return true;
}

cudaGraphExec_t DeviceModel::capture(const GraphKey& key, const RowMeta& meta) {
  return captureGraph([&] { enqueueForward(meta, std::get<0>(key), std::get<1>(key), std::get<2>(key)); });
}

cudaGraphExec_t DeviceModel::captureGraph(const std::function<void()>& enqueue) {
  CUDA_CHECK(cudaStreamBeginCapture(compute_, cudaStreamCaptureModeThreadLocal));
  cudaGraph_t graph = nullptr;
  try {
    enqueue();
  } catch (...) {
    cudaStreamEndCapture(compute_, &graph);
    if (graph) cudaGraphDestroy(graph);
    throw;
  }
  CUDA_CHECK(cudaStreamEndCapture(compute_, &graph));
  cudaGraphExec_t exec = nullptr;
  const cudaError_t instantiated = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  CUDA_CHECK(instantiated);
  return exec;
}

std::vector<std::pair<std::string, double>> DeviceModel::profileForward(const RowMeta& rows, int rowCount,
                                                                      int logitCount, bool anyAdapter) {
  if (graphsEnabled_) {
    try {
      return profileInGraph(rows, rowCount, logitCount, anyAdapter);
    } catch (const std::exception& error) {
      // Eager timings still say where the time goes; they also count the host's gaps between launches.
      std::fprintf(stderr, "luminet cuda: timing phases inside a graph failed (%s); timing them eagerly\n",
                   error.what());
      cudaGetLastError();
    }
  }
  PhaseTimer timer(compute_);
  enqueueForward(rows, rowCount, logitCount, anyAdapter, &timer);
  CUDA_CHECK(cudaStreamSynchronize(compute_));
  return timer.totals();
}

std::vector<std::pair<std::string, double>> DeviceModel::profileInGraph(const RowMeta& rows, int rowCount,
                                                                       int logitCount, bool anyAdapter) {
  // Captured with its timing events and launched twice: the first launch uploads the graph, the second is
  // timed as kept graphs replay. Running the forward twice is harmless: it writes the same cache entries.
  std::unique_ptr<PhaseTimer> timer;
  cudaGraphExec_t exec = captureGraph([&] {
    timer = std::make_unique<PhaseTimer>(compute_);
    enqueueForward(rows, rowCount, logitCount, anyAdapter, timer.get());
  });
  try {
    for (int launch = 0; launch < 2; ++launch) {
      CUDA_CHECK(cudaGraphLaunch(exec, compute_));
      CUDA_CHECK(cudaStreamSynchronize(compute_));
    }
    cudaGraphExecDestroy(exec);
  } catch (...) {
    cudaGraphExecDestroy(exec);
    throw;
  }
  return timer->totals();
}

void DeviceModel::gemm(const half* x, int rows, int in, const half* w, int out, float* y, float beta) {
  // Row-major y[rows, out] = x[rows, in] · wᵀ (w is [out, in], Hugging Face's layout) is, in cuBLAS's
  // column-major terms, yᵀ = w · xᵀ: w read transposed, x as is.
  const float alpha = 1.f;
  checkCublas(cublas_->gemmEx(handle_, kCublasOpT, kCublasOpN, out, rows, in, &alpha, w, kCudaR16F, in, x, kCudaR16F,
                             in, &beta, y, kCudaR32F, out, kCublasCompute32F, kCublasGemmDefault),
              "cublasGemmEx");
}

void DeviceModel::enqueueLora(const RowMeta& rows, int rowCount, int layer, std::initializer_list<int> kinds,
                              const half* x, int xStride, float* y, int yStride) {
  LoraGroupView group{};
  group.layer = layer;
  group.layers = spec_.layers;
  group.maxRank = spec_.maxRank;
  group.ranks = ranks_.as<int>();
  group.hasBias = hasBias_.as<unsigned char>();
  int column = 0;
  for (int kind : kinds) {
    const LoraBank& bank = banks_[size_t(layer) * kModuleKinds + kind];
    group.modules[group.count++] = {bank.a.as<half>(), bank.scaledBT.as<half>(), bank.scaledBias.as<half>(),
                                    bank.in, bank.out, column, kind};
    column += bank.out;
  }
  launchLoraShrink(rows, rowCount, group, x, xStride, shrink_.as<float>(), compute_);
  launchLoraExpand(rows, rowCount, group, shrink_.as<float>(), y, yStride, compute_);
}

void DeviceModel::enqueueForward(const RowMeta& rows, int rowCount, int logitCount, bool anyAdapter,
                                 PhaseTimer* timer) {
  const ModelSpec& s = spec_;
  const int qkvWidth = (s.heads + 2 * s.kvHeads) * s.headDim;
  const int attentionWidth = s.heads * s.headDim;
  // YaRN multiplies cos and sin by ropeScale, so q·k by its square: the softmax scale takes it.
  const AttentionShape shape{s.heads, s.kvHeads, s.headDim, s.ropeScale * s.ropeScale / std::sqrt(float(s.headDim))};
  const KvCacheView cache{keys_.as<half>(), values_.as<half>(), s.layers, s.kvHeads, s.maxContext, s.headDim};
  float* residual = residual_.as<float>();
  half* normed = normed_.as<half>();
  float* qkv = qkv_.as<float>();
  float* gateUp = gateUp_.as<float>();
  half* attention = attention_.as<half>();
  half* activation = activation_.as<half>();

  const auto mark = [timer](const char* phase) {
    if (timer) timer->mark(phase);
  };

  launchEmbed(rows, rowCount, weightData("embed"), s.hidden, residual, compute_);
  mark("embed");
  for (int l = 0; l < s.layers; ++l) {
    launchRmsNorm(residual, nullptr, rowCount, s.hidden, weightData(layerName(l, "attn_norm")), s.rmsNormEps, normed,
                  compute_);
    mark("norms");
    gemm(normed, rowCount, s.hidden, weightData(layerName(l, "qkv")), qkvWidth, qkv, 0.f);
    mark("qkv gemm");
    if (anyAdapter) {
      enqueueLora(rows, rowCount, l, {kQ, kK, kV}, normed, s.hidden, qkv, qkvWidth);
      mark("lora");
    }
    const HeadNorms norms = s.qkNorm ? HeadNorms{weightData(layerName(l, "q_norm")),
                                                 weightData(layerName(l, "k_norm")), s.rmsNormEps}
                                      : HeadNorms{};
    launchRotaryAndCache(rows, rowCount, qkv, s.qkvBias ? weightData(layerName(l, "qkv_bias")) : nullptr, norms,
                         invFreq_.as<float>(), shape, cache, l, queries_.as<float>(), compute_);
    mark("rotary + cache write");
    launchAttention(rows, rowCount, queries_.as<float>(), shape, cache, l, attention, compute_);
    mark("attention");
    // o and down add into the residual stream: beta = 1.
    gemm(attention, rowCount, attentionWidth, weightData(layerName(l, "o")), s.hidden, residual, 1.f);
    mark("o gemm");
    if (anyAdapter) {
      enqueueLora(rows, rowCount, l, {kO}, attention, attentionWidth, residual, s.hidden);
      mark("lora");
    }
    launchRmsNorm(residual, nullptr, rowCount, s.hidden, weightData(layerName(l, "mlp_norm")), s.rmsNormEps, normed,
                  compute_);
    mark("norms");
    gemm(normed, rowCount, s.hidden, weightData(layerName(l, "gate_up")), 2 * s.intermediate, gateUp, 0.f);
    mark("gate_up gemm");
    if (anyAdapter) {
      enqueueLora(rows, rowCount, l, {kGate, kUp}, normed, s.hidden, gateUp, 2 * s.intermediate);
      mark("lora");
    }
    launchSiluMul(gateUp, rowCount, s.intermediate, activation, compute_);
    mark("silu * up");
    gemm(activation, rowCount, s.intermediate, weightData(layerName(l, "down")), s.hidden, residual, 1.f);
    mark("down gemm");
    if (anyAdapter) {
      enqueueLora(rows, rowCount, l, {kDown}, activation, s.intermediate, residual, s.hidden);
      mark("lora");
    }
  }
  // Only the rows whose logits are wanted go through the final norm and lm_head.
  half* lmInput = lmInput_.as<half>();
  launchRmsNorm(residual, rows.logitRows, logitCount, s.hidden, weightData("final_norm"), s.rmsNormEps, lmInput,
                compute_);
  mark("norms");
  gemm(lmInput, logitCount, s.hidden, weightData(s.tieWordEmbeddings ? "embed" : "lm_head"), s.vocab,
       logits_.as<float>(), 0.f);
  mark("lm_head gemm");
  launchArgmax(logits_.as<float>(), logitCount, s.vocab, argmax_.as<int>(), compute_);
  mark("argmax");
}

RooflineReport DeviceModel::measureRoofline(int size, size_t copyBytes, int repeats) {
  require(size > 0 && copyBytes > 0 && repeats > 0, "roofline sizes must be positive");
  std::lock_guard<std::mutex> lock(stepMutex_);
  CUDA_CHECK(cudaSetDevice(spec_.device));
  const size_t square = size_t(size) * size;
  DeviceBuffer a(square * sizeof(half)), b(square * sizeof(half)), c(square * sizeof(float));
  DeviceBuffer from(copyBytes), to(copyBytes);
  CUDA_CHECK(cudaMemsetAsync(a.as<void>(), 0, a.bytes(), compute_));
  CUDA_CHECK(cudaMemsetAsync(b.as<void>(), 0, b.bytes(), compute_));
  CUDA_CHECK(cudaMemsetAsync(from.as<void>(), 0, copyBytes, compute_));
  auto timed = [&](auto&& work) {
    work();  // warm-up: cuBLAS picks and loads its kernel
    CUDA_CHECK(cudaStreamSynchronize(compute_));
    const auto start = std::chrono::steady_clock::now();
    for (int r = 0; r < repeats; ++r) work();
    CUDA_CHECK(cudaStreamSynchronize(compute_));
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  const double gemmSeconds = timed([&] { gemm(a.as<half>(), size, size, b.as<half>(), size, c.as<float>(), 0.f); });
  const double copySeconds = timed([&] {
    CUDA_CHECK(cudaMemcpyAsync(to.as<void>(), from.as<void>(), copyBytes, cudaMemcpyDeviceToDevice, compute_));
  });
  // A copy reads and writes every byte.
  return {2.0 * square * size * repeats / gemmSeconds, 2.0 * copyBytes * repeats / copySeconds};
}

std::vector<float> DeviceModel::logitsOf(int row) {
  std::lock_guard<std::mutex> lock(stepMutex_);
  require(row >= 0 && row < lastLogitCount_,
          "logit row " + std::to_string(row) + " is not one of the last step's " + std::to_string(lastLogitCount_));
  CUDA_CHECK(cudaSetDevice(spec_.device));
  std::vector<float> out(spec_.vocab);
  CUDA_CHECK(cudaMemcpy(out.data(), logits_.as<float>() + size_t(row) * spec_.vocab, spec_.vocab * sizeof(float),
                        cudaMemcpyDeviceToHost));
  return out;
}

MemoryReport DeviceModel::memory() const {
  MemoryReport report{};
  for (const auto& [name, w] : weights_) report.weightsBytes += w.buffer.bytes();
  report.kvCacheBytes = keys_.bytes() + values_.bytes();
  for (const LoraBank& bank : banks_)
    report.adapterBankBytes += bank.a.bytes() + bank.scaledBT.bytes() + bank.scaledBias.bytes();
  report.adapterBankBytes += ranks_.bytes() + hasBias_.bytes();
  for (const DeviceBuffer* b :
       {&meta_, &residual_, &normed_, &qkv_, &queries_, &attention_, &gateUp_, &activation_, &shrink_, &lmInput_,
        &logits_, &argmax_, &cublasWorkspace_, &temperatures_, &candidateIds_, &candidateLogits_, &logSumExp_,
        &penalized_, &devicePenalties_})
    report.scratchBytes += b->bytes();
  cudaSetDevice(spec_.device);
  cudaMemGetInfo(&report.freeBytes, &report.totalBytes);
  return report;
}

}  // namespace luminet
