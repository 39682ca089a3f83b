// Where a step's device time goes: timing events recorded between the launches of one forward, read back
// as milliseconds per phase (a phase that repeats per layer is summed). Events are recorded as external
// event nodes, so a forward captured into a CUDA graph is timed as a replayed graph runs — without the host's
// launch gaps that an eagerly launched forward would show.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "cuda-check.h"

namespace luminet {

class PhaseTimer {
 public:
  explicit PhaseTimer(cudaStream_t stream) : stream_(stream) { record(); }
  ~PhaseTimer() {
    for (cudaEvent_t event : events_) cudaEventDestroy(event);
  }
  PhaseTimer(const PhaseTimer&) = delete;
  PhaseTimer& operator=(const PhaseTimer&) = delete;

  /** Ends `phase`: the device time since the previous mark (or the start) is counted to it. */
  void mark(const char* phase) {
    record();
    phases_.emplace_back(phase);
  }

  /** Milliseconds per phase, in the order phases first appeared; call once the stream has run the marks. */
  std::vector<std::pair<std::string, double>> totals() const {
    std::vector<std::pair<std::string, double>> totals;
    for (size_t i = 0; i < phases_.size(); ++i) {
      float ms = 0.f;
      CUDA_CHECK(cudaEventElapsedTime(&ms, events_[i], events_[i + 1]));
      auto found = totals.begin();
      while (found != totals.end() && found->first != phases_[i]) ++found;
      if (found == totals.end()) {
        totals.emplace_back(phases_[i], ms);
      } else {
        found->second += ms;
      }
    }
    return totals;
  }

 private:
  void record() {
    cudaEvent_t event = nullptr;
    CUDA_CHECK(cudaEventCreate(&event));
    events_.push_back(event);
    CUDA_CHECK(cudaEventRecordWithFlags(event, stream_, cudaEventRecordExternal));
  }

  cudaStream_t stream_;
  std::vector<cudaEvent_t> events_;
  std::vector<std::string> phases_;
};

}  // namespace luminet
