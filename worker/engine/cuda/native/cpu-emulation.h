// A CPU stand-in for the slice of CUDA this backend uses, so its kernels and its runtime calls run on a
// machine without a GPU (the test suite builds the addon this way: npm run build:cuda -- --emulate).
//
// Kernels run block after block; a block's threads are fibers (ucontext) on the calling thread, switched
// at __syncthreads and at warp shuffles, which wait for the block's or the warp's live threads like the
// hardware does. Device memory is host memory; a stream runs its work at once unless it is being captured,
// in which case the work is recorded and a launched graph replays it: the same arguments, read from the
// same buffers, as a captured CUDA graph would. What it cannot show is speed, races between real
// concurrent threads, and anything the hardware does differently from the programming model.
#pragma once
#include <driver_types.h>
#include <vector_types.h>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <tuple>
#include <utility>

// The CUDA headers define these as attributes of nvcc; here kernels are plain functions and a block's
// shared variables belong to the thread that runs the block's fibers.
#undef __global__
#undef __device__
#undef __host__
#undef __shared__
#undef __forceinline__
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static thread_local

extern thread_local uint3 threadIdx;
extern thread_local uint3 blockIdx;
extern thread_local dim3 blockDim;
extern thread_local dim3 gridDim;

namespace luminet::emulation {

/** Runs `body` once per thread of every block of `grid`, as a GPU would (see the file comment). */
void runGrid(dim3 grid, dim3 block, size_t sharedBytes, const std::function<void()>& body);
/** Runs `work` on the stream now, or records it while the stream is being captured. */
void submit(cudaStream_t stream, std::function<void()> work);
void* dynamicSharedMemory();
void blockBarrier();
void warpBarrier();
uint32_t* warpExchange();
[[noreturn]] void fail(const char* what);

template <typename T>
T* dynamicShared() {
  return static_cast<T*>(dynamicSharedMemory());
}

template <typename... Params>
struct Launcher {
  void (*kernel)(Params...);
  dim3 grid, block;
  size_t sharedBytes;
  cudaStream_t stream;

  template <typename... Args>
  void operator()(Args&&... args) const {
    // Arguments are copied at launch, as CUDA copies them into the launch's parameter buffer.
    std::tuple<std::decay_t<Params>...> bound(std::forward<Args>(args)...);
    auto work = [kernel = kernel, grid = grid, block = block, shared = sharedBytes, bound] {
      runGrid(grid, block, shared, [&] { std::apply(kernel, bound); });
    };
    submit(stream, std::move(work));
  }
};

template <typename... Params>
Launcher<Params...> launcher(void (*kernel)(Params...), dim3 grid, dim3 block, size_t sharedBytes,
                             cudaStream_t stream) {
  return {kernel, grid, block, sharedBytes, stream};
}

}  // namespace luminet::emulation

// Device intrinsics the kernels use.
inline void __syncthreads() { luminet::emulation::blockBarrier(); }

template <typename T>
T __shfl_xor_sync(unsigned /*mask*/, T value, int laneMask) {
  static_assert(sizeof(T) == 4, "32-bit shuffles only");
  uint32_t* lanes = luminet::emulation::warpExchange();
  const int lane = threadIdx.x % 32;
  std::memcpy(&lanes[lane], &value, 4);
  luminet::emulation::warpBarrier();
  T result;
  std::memcpy(&result, &lanes[lane ^ laneMask], 4);
  luminet::emulation::warpBarrier();
  return result;
}

inline float __expf(float x) { return std::exp(x); }
// Fibers never preempt one another between two statements: a plain read-modify-write is atomic here.
inline unsigned atomicAdd(unsigned* address, unsigned value) {
  const unsigned old = *address;
  *address = old + value;
  return old;
}
inline float rsqrtf(float x) { return 1.f / std::sqrt(x); }
using std::max;
using std::min;

// The runtime API calls the backend makes, with CUDA's signatures.
const char* cudaGetErrorString(cudaError_t error);
cudaError_t cudaGetLastError();
cudaError_t cudaGetDeviceCount(int* count);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* properties, int device);
cudaError_t cudaMemGetInfo(size_t* free, size_t* total);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned flags);
cudaError_t cudaStreamSynchronize(cudaStream_t stream);
cudaError_t cudaStreamDestroy(cudaStream_t stream);
cudaError_t cudaMalloc(void** pointer, size_t bytes);
cudaError_t cudaFree(void* pointer);
cudaError_t cudaMallocHost(void** pointer, size_t bytes);
cudaError_t cudaFreeHost(void* pointer);
cudaError_t cudaMemcpy(void* to, const void* from, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void* to, const void* from, size_t bytes, cudaMemcpyKind kind, cudaStream_t stream);
cudaError_t cudaMemset(void* pointer, int value, size_t bytes);
cudaError_t cudaMemsetAsync(void* pointer, int value, size_t bytes, cudaStream_t stream);
cudaError_t cudaStreamBeginCapture(cudaStream_t stream, cudaStreamCaptureMode mode);
cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t* graph);
cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long flags);
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream);
cudaError_t cudaGraphDestroy(cudaGraph_t graph);
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec);
// Events stamp the host's clock when the stream reaches them: in emulation the work between two events ran
// on the calling thread in between, so their difference is its (CPU) time.
cudaError_t cudaEventCreate(cudaEvent_t* event);
cudaError_t cudaEventDestroy(cudaEvent_t event);
cudaError_t cudaEventRecordWithFlags(cudaEvent_t event, cudaStream_t stream, unsigned flags);
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end);

template <typename Kernel>
cudaError_t cudaFuncSetAttribute(Kernel*, cudaFuncAttribute, int) {
  return cudaSuccess;  // shared memory is host memory: any size
}
