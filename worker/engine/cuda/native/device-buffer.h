// Owning handles to device and pinned host memory, freed when they go out of scope.
#pragma once
#include "gpu.h"

#include <cstddef>
#include <utility>

#include "cuda-check.h"

namespace luminet {

/** Memory from `Allocate`, returned with `Release`; movable, not copyable. */
template <cudaError_t (*Allocate)(void**, size_t), cudaError_t (*Release)(void*)>
class OwnedMemory {
 public:
  OwnedMemory() = default;
  explicit OwnedMemory(size_t bytes) : bytes_(bytes) {
    if (bytes > 0) CUDA_CHECK(Allocate(&data_, bytes));
  }
  OwnedMemory(OwnedMemory&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), bytes_(std::exchange(other.bytes_, 0)) {}
  OwnedMemory& operator=(OwnedMemory&& other) noexcept {
    std::swap(data_, other.data_);
    std::swap(bytes_, other.bytes_);
    return *this;
  }
  OwnedMemory(const OwnedMemory&) = delete;
  OwnedMemory& operator=(const OwnedMemory&) = delete;
  ~OwnedMemory() {
    if (data_) Release(data_);
  }

  template <typename T>
  T* as() const {
    return static_cast<T*>(data_);
  }
  size_t bytes() const { return bytes_; }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

inline cudaError_t allocateDevice(void** pointer, size_t bytes) { return cudaMalloc(pointer, bytes); }
inline cudaError_t allocatePinned(void** pointer, size_t bytes) { return cudaMallocHost(pointer, bytes); }
inline cudaError_t releaseDevice(void* pointer) { return cudaFree(pointer); }
inline cudaError_t releasePinned(void* pointer) { return cudaFreeHost(pointer); }

using DeviceBuffer = OwnedMemory<allocateDevice, releaseDevice>;
/** Page-locked host memory: what lets cudaMemcpyAsync run on a copy engine beside the kernels. */
using PinnedBuffer = OwnedMemory<allocatePinned, releasePinned>;

}  // namespace luminet
