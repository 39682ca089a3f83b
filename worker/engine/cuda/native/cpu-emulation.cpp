#ifdef LUMINET_CPU_EMULATION

#include "cpu-emulation.h"

#include <setjmp.h>
#include <ucontext.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <vector>

thread_local uint3 threadIdx;
thread_local uint3 blockIdx;
thread_local dim3 blockDim;
thread_local dim3 gridDim;

struct CUstream_st {
  std::vector<std::function<void()>>* capture = nullptr;
};
struct CUgraph_st {
  std::vector<std::function<void()>> work;
};
struct CUgraphExec_st {
  std::vector<std::function<void()>> work;
};
struct CUevent_st {
  std::chrono::steady_clock::time_point at;
  bool recorded = false;
};

namespace luminet::emulation {

namespace {

constexpr size_t kFiberStackBytes = 64 * 1024;
constexpr int kWarpSize = 32;

enum class FiberState { Runnable, AtBlockBarrier, AtWarpBarrier, Done };

struct Fiber {
  uint3 index;
  FiberState state = FiberState::Runnable;
};

/** The block being run on this thread: its threads' states, shared memory and warp exchange slots. */
struct Block {
  std::vector<Fiber> fibers;
  size_t current = 0;
  std::vector<unsigned char> dynamicShared;
  std::vector<uint32_t> exchange;  // 32 per warp
  const std::function<void()>* body = nullptr;
};

/**
 * A fiber's stack and where it waits. Each OS thread keeps its fibers for good: a fiber runs the body of
 * whichever block thread it is given, then parks again. Switching is _setjmp/_longjmp, which, unlike
 * swapcontext, makes no system call; ucontext only starts a fiber the first time.
 */
struct FiberSlot {
  std::vector<char> stack;
  jmp_buf parked;
};

thread_local Block* running = nullptr;
thread_local std::vector<FiberSlot> slots;
thread_local jmp_buf scheduler;
thread_local size_t starting = 0;

[[noreturn]] void fiberLoop() {
  const size_t self = starting;
  for (;;) {
    if (_setjmp(slots[self].parked) == 0) _longjmp(scheduler, 1);
    (*running->body)();
    running->fibers[running->current].state = FiberState::Done;
  }
}

void ensureFibers(size_t count) {
  // A parked fiber's frame lives on its own stack, which never moves; its jmp_buf may move with the vector.
  while (slots.size() < count) {
    slots.emplace_back();
    FiberSlot& slot = slots.back();
    slot.stack.resize(kFiberStackBytes);
    ucontext_t start, here;
    getcontext(&start);
    start.uc_stack.ss_sp = slot.stack.data();
    start.uc_stack.ss_size = slot.stack.size();
    start.uc_link = nullptr;
    makecontext(&start, fiberLoop, 0);
    starting = slots.size() - 1;
    if (_setjmp(scheduler) == 0) swapcontext(&here, &start);  // the fiber parks and jumps back here
  }
}

void resume(Block& block, size_t i) {
  block.current = i;
  threadIdx = block.fibers[i].index;
  if (_setjmp(scheduler) == 0) _longjmp(slots[i].parked, 1);
}

void yieldAs(FiberState state) {
  Block& block = *running;
  block.fibers[block.current].state = state;
  if (_setjmp(slots[block.current].parked) == 0) _longjmp(scheduler, 1);
}

/** Releases every barrier all of whose live threads have reached it; false when none could be. */
bool releaseBarriers(Block& block) {
  size_t live = 0, atBlock = 0;
  for (const Fiber& f : block.fibers) {
    if (f.state != FiberState::Done) ++live;
    if (f.state == FiberState::AtBlockBarrier) ++atBlock;
  }
  if (live > 0 && atBlock == live) {
    for (Fiber& f : block.fibers) f.state = FiberState::Runnable;
    return true;
  }
  bool released = false;
  for (size_t start = 0; start < block.fibers.size(); start += kWarpSize) {
    const size_t end = std::min(block.fibers.size(), start + kWarpSize);
    size_t warpLive = 0, waiting = 0;
    for (size_t i = start; i < end; ++i) {
      if (block.fibers[i].state != FiberState::Done) ++warpLive;
      if (block.fibers[i].state == FiberState::AtWarpBarrier) ++waiting;
    }
    if (warpLive > 0 && waiting == warpLive) {
      for (size_t i = start; i < end; ++i)
        if (block.fibers[i].state == FiberState::AtWarpBarrier) block.fibers[i].state = FiberState::Runnable;
      released = true;
    }
  }
  return released;
}

/**
 * LUMINET_CUDA_EMULATION_ORDER=reverse runs a block's threads last to first between barriers: a kernel
 * whose threads read what others write without a barrier between gives different results in the two orders.
 */
bool reverseOrder() {
  static const bool reverse = [] {
    const char* order = std::getenv("LUMINET_CUDA_EMULATION_ORDER");
    return order && std::strcmp(order, "reverse") == 0;
  }();
  return reverse;
}

void runBlock(Block& block) {
  const size_t threads = block.fibers.size();
  const bool reverse = reverseOrder();
  for (;;) {
    bool ran = false;
    for (size_t n = 0; n < threads; ++n) {
      const size_t i = reverse ? threads - 1 - n : n;
      if (block.fibers[i].state != FiberState::Runnable) continue;
      resume(block, i);
      ran = true;
    }
    bool done = true;
    for (const Fiber& f : block.fibers) done = done && f.state == FiberState::Done;
    if (done) return;
    if (!releaseBarriers(block) && !ran) fail("deadlock: threads wait at barriers the rest of the block never reaches");
  }
}

}  // namespace

void runGrid(dim3 grid, dim3 blockShape, size_t sharedBytes, const std::function<void()>& body) {
  if (running) fail("a kernel launched from inside a kernel");
  Block block;
  const size_t threads = size_t(blockShape.x) * blockShape.y * blockShape.z;
  if (threads == 0 || threads > 1024) fail("a block needs 1..1024 threads");
  block.fibers.resize(threads);
  for (size_t i = 0; i < threads; ++i)
    block.fibers[i].index = uint3{unsigned(i % blockShape.x), unsigned(i / blockShape.x % blockShape.y),
                                  unsigned(i / (size_t(blockShape.x) * blockShape.y))};
  block.dynamicShared.resize(sharedBytes + 16);
  block.exchange.resize((threads + kWarpSize - 1) / kWarpSize * kWarpSize);
  block.body = &body;
  ensureFibers(threads);
  blockDim = blockShape;
  gridDim = grid;
  running = &block;
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) {
        blockIdx = uint3{x, y, z};
        for (Fiber& f : block.fibers) f.state = FiberState::Runnable;
        runBlock(block);
      }
  running = nullptr;
}

void submit(cudaStream_t stream, std::function<void()> work) {
  if (stream && stream->capture) {
    stream->capture->push_back(std::move(work));
  } else {
    work();
  }
}

void* dynamicSharedMemory() { return running->dynamicShared.data(); }

void blockBarrier() { yieldAs(FiberState::AtBlockBarrier); }

void warpBarrier() { yieldAs(FiberState::AtWarpBarrier); }

uint32_t* warpExchange() { return running->exchange.data() + (running->current / kWarpSize) * kWarpSize; }

void fail(const char* what) {
  std::fprintf(stderr, "luminet CUDA emulation: %s\n", what);
  std::abort();
}

}  // namespace luminet::emulation

using luminet::emulation::submit;

const char* cudaGetErrorString(cudaError_t error) {
  return error == cudaSuccess ? "no error" : "emulated CUDA error";
}
cudaError_t cudaGetLastError() { return cudaSuccess; }
cudaError_t cudaGetDeviceCount(int* count) {
  *count = 1;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int) { return cudaSuccess; }
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* properties, int) {
  *properties = cudaDeviceProp{};
  std::snprintf(properties->name, sizeof(properties->name), "CPU emulation");
  return cudaSuccess;
}
cudaError_t cudaMemGetInfo(size_t* free, size_t* total) {
  *free = 0;
  *total = 0;
  return cudaSuccess;
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned) {
  *stream = new CUstream_st();
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  delete stream;
  return cudaSuccess;
}
cudaError_t cudaMalloc(void** pointer, size_t bytes) {
  *pointer = std::aligned_alloc(256, (bytes + 255) / 256 * 256);
  // Fresh device memory holds garbage, not zeros: make reads of never-written memory show.
  if (*pointer) std::memset(*pointer, 0x7f, bytes);
  return *pointer ? cudaSuccess : cudaErrorMemoryAllocation;
}
cudaError_t cudaFree(void* pointer) {
  std::free(pointer);
  return cudaSuccess;
}
cudaError_t cudaMallocHost(void** pointer, size_t bytes) { return cudaMalloc(pointer, bytes); }
cudaError_t cudaFreeHost(void* pointer) { return cudaFree(pointer); }
cudaError_t cudaMemcpy(void* to, const void* from, size_t bytes, cudaMemcpyKind) {
  std::memcpy(to, from, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* to, const void* from, size_t bytes, cudaMemcpyKind, cudaStream_t stream) {
  submit(stream, [=] { std::memcpy(to, from, bytes); });
  return cudaSuccess;
}
cudaError_t cudaMemset(void* pointer, int value, size_t bytes) {
  std::memset(pointer, value, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void* pointer, int value, size_t bytes, cudaStream_t stream) {
  submit(stream, [=] { std::memset(pointer, value, bytes); });
  return cudaSuccess;
}
cudaError_t cudaStreamBeginCapture(cudaStream_t stream, cudaStreamCaptureMode) {
  if (stream->capture) return cudaErrorIllegalState;
  stream->capture = new std::vector<std::function<void()>>();
  return cudaSuccess;
}
cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t* graph) {
  if (!stream->capture) return cudaErrorIllegalState;
  *graph = new CUgraph_st{std::move(*stream->capture)};
  delete stream->capture;
  stream->capture = nullptr;
  return cudaSuccess;
}
cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long) {
  *exec = new CUgraphExec_st{graph->work};
  return cudaSuccess;
}
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream) {
  for (const auto& work : exec->work) submit(stream, work);
  return cudaSuccess;
}
cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
  delete graph;
  return cudaSuccess;
}
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
  delete exec;
  return cudaSuccess;
}
cudaError_t cudaEventCreate(cudaEvent_t* event) {
  *event = new CUevent_st{};
  return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t event) {
  delete event;
  return cudaSuccess;
}
cudaError_t cudaEventRecordWithFlags(cudaEvent_t event, cudaStream_t stream, unsigned) {
  submit(stream, [event] {
    event->at = std::chrono::steady_clock::now();
    event->recorded = true;
  });
  return cudaSuccess;
}
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  // CUDA's answer for an event that has not been reached yet.
  if (!start->recorded || !end->recorded) return cudaErrorNotReady;
  *ms = std::chrono::duration<float, std::milli>(end->at - start->at).count();
  return cudaSuccess;
}

#endif  // LUMINET_CPU_EMULATION
