// One Llama-family model resident on an NVIDIA GPU: fp16 weights, a KV cache of fixed rows, adapter banks
// of fixed slots, and the step that runs a ragged batch of rows through the decode path on one stream.
// Adapter writes go over a second stream from pinned memory, so a load never waits for a step.
#pragma once
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "cublas-loader.h"
#include "device-buffer.h"
#include "kernels.cuh"
#include "phase-timer.h"

namespace luminet {

struct ModelSpec {
  int layers = 0;
  int hidden = 0;
  int intermediate = 0;
  int heads = 0;
  int kvHeads = 0;
  int headDim = 0;
  int vocab = 0;
  float rmsNormEps = 1e-5f;
  bool qkvBias = false;
  bool qkNorm = false;
  bool tieWordEmbeddings = false;
  std::vector<float> invFreq;
  float ropeScale = 1.f;
  int maxContext = 0;
  int cacheRows = 0;
  int maxStepTokens = 0;
  int slots = 0;
  int maxRank = 0;
  bool cudaGraphs = true;
  int device = 0;
};

/** One adapter module in host memory (fp32), as the PEFT parser produced it. */
struct AdapterModuleData {
  int layer = 0;
  int kind = 0;
  int rank = 0;
  const float* a = nullptr;
  size_t aCount = 0;
  const float* scaledBT = nullptr;
  size_t scaledBTCount = 0;
  const float* scaledBias = nullptr;  // null: no lora bias
  size_t scaledBiasCount = 0;
};

struct StepInput {
  std::vector<int> tokens, cacheRows, positions, slots, logitRows;
  bool returnLogits = false;
  /** Largest logits to return per logit row (0: none), with the log-sum-exp at each row's temperature. */
  int candidates = 0;
  std::vector<float> temperatures;  // one per logit row when candidates > 0
  /**
   * Penalties (decode-row.ts RowPenalties) per entry: the logit row (index into logitRows) and token they
   * change. The argmax and candidates come from the penalized logits; logitsOf and returnLogits stay raw.
   */
  std::vector<int> penaltyRows, penaltyTokens;
  std::vector<double> penaltyRepetition, penaltyPresence, penaltyFrequency;
  /** Times the step's phases (StepOutput::phases); a profiled step is not replayed from a kept graph. */
  bool profile = false;
};

struct StepOutput {
  std::vector<int> argmax;
  std::vector<float> logits;  // empty unless returnLogits
  std::vector<int> candidateIds;  // [logit rows][candidates], largest logit first
  std::vector<float> candidateLogits;
  std::vector<float> logSumExp;  // one per logit row
  /** Device milliseconds per phase of the forward (per-layer phases summed) when the step was profiled. */
  std::vector<std::pair<std::string, double>> phases;
};

/** The device's measured peak: fp16 GEMM rate (the engine's kind, fp32 out) and device-to-device copy rate. */
struct RooflineReport {
  double flopsPerSecond, bytesPerSecond;
};

struct MemoryReport {
  size_t weightsBytes, kvCacheBytes, adapterBankBytes, scratchBytes, freeBytes, totalBytes;
};

class DeviceModel {
 public:
  explicit DeviceModel(ModelSpec spec);
  ~DeviceModel();
  DeviceModel(const DeviceModel&) = delete;
  DeviceModel& operator=(const DeviceModel&) = delete;

  void setWeight(const std::string& name, const void* data, size_t bytes, SourceDtype dtype, size_t offset);
  /** Blocks the calling thread (not the compute stream) until the slot holds the adapter. */
  void writeAdapter(int slot, const std::vector<AdapterModuleData>& modules);
  void clearSlot(int slot);
  /** Copies cache row `from` (keys and values, every position) into row `to`, in order with the steps. */
  void copyCacheRow(int from, int to);
  /** Runs one step and waits for its results. */
  StepOutput step(const StepInput& input);
  /** The logits of logit row `row` of the last step (they stay on the device until the next one). */
  std::vector<float> logitsOf(int row);
  MemoryReport memory() const;
  /** Times `repeats` GEMMs of size³ and copies of `copyBytes` on the compute stream. */
  RooflineReport measureRoofline(int size, size_t copyBytes, int repeats);
  const std::string& deviceName() const { return deviceName_; }

 private:
  struct Weight {
    DeviceBuffer buffer;
    size_t elements = 0;
    size_t uploaded = 0;
  };
  struct LoraBank {
    DeviceBuffer a, scaledBT, scaledBias;
    int in = 0, out = 0;
  };
  using GraphKey = std::tuple<int, int, bool>;  // rows, logit rows, any adapter

  void allocateWeights();
  void allocateBanks();
  void allocateScratch();
  Weight& weight(const std::string& name);
  const half* weightData(const std::string& name) const;
  void checkWeightsComplete();
  void validate(const StepInput& input) const;
  /** Copies the logit rows, applies the step's penalties to the copy and takes the argmax from it. */
  const float* enqueuePenalties(const StepInput& input, int logitCount);
  /** Enqueues the whole forward of a step on the compute stream; a timer, when given, marks each phase. */
  void enqueueForward(const RowMeta& rows, int rowCount, int logitCount, bool anyAdapter,
                      PhaseTimer* timer = nullptr);
  /** Runs the forward with its phases timed (in a one-off graph when graphs are on) and returns them. */
  std::vector<std::pair<std::string, double>> profileForward(const RowMeta& rows, int rowCount, int logitCount,
                                                             bool anyAdapter);
  std::vector<std::pair<std::string, double>> profileInGraph(const RowMeta& rows, int rowCount, int logitCount,
                                                             bool anyAdapter);
  void enqueueLora(const RowMeta& rows, int rowCount, int layer, std::initializer_list<int> kinds, const half* x,
                   int xStride, float* y, int yStride);
  void gemm(const half* x, int rows, int in, const half* w, int out, float* y, float beta);
  /** Replays (capturing first if new) the step's graph; false when capture failed and graphs are now off. */
  bool runGraph(const GraphKey& key, const RowMeta& rows);
  cudaGraphExec_t capture(const GraphKey& key, const RowMeta& rows);
  /** Captures what `enqueue` puts on the compute stream as an executable graph. */
  cudaGraphExec_t captureGraph(const std::function<void()>& enqueue);
  size_t kvElements() const;

  const ModelSpec spec_;
  std::string deviceName_;
  const CublasApi* cublas_ = nullptr;  // opened once a device is known to exist
  CublasHandle handle_ = nullptr;
  cudaStream_t compute_ = nullptr;
  cudaStream_t loads_ = nullptr;

  std::map<std::string, Weight> weights_;
  bool weightsComplete_ = false;
  DeviceBuffer invFreq_;
  DeviceBuffer keys_, values_;
  std::vector<LoraBank> banks_;  // [layer·7 + kind]
  DeviceBuffer ranks_, hasBias_;

  // Step scratch, sized for maxStepTokens rows.
  DeviceBuffer meta_, residual_, normed_, qkv_, queries_, attention_, gateUp_, activation_, shrink_, lmInput_,
      logits_, argmax_, cublasWorkspace_, temperatures_, candidateIds_, candidateLogits_, logSumExp_;
  PinnedBuffer hostMeta_, hostArgmax_, hostLogits_, hostTemperatures_, hostCandidateIds_, hostCandidateLogits_,
      hostLogSumExp_;
  int lastLogitCount_ = 0;

  // Penalized logit rows and the step's penalty entries, allocated for the first penalized step and grown.
  DeviceBuffer penalized_, devicePenalties_;
  PinnedBuffer hostPenalties_;

  // Adapter staging, grown to the largest adapter written so far.
  PinnedBuffer hostStaging_;
  DeviceBuffer deviceStaging_;

  bool graphsEnabled_;
  std::mutex stepMutex_, loadMutex_;
  std::map<GraphKey, int> timesSeen_;
  std::map<GraphKey, cudaGraphExec_t> graphs_;
};

}  // namespace luminet
