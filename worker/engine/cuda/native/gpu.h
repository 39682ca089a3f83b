// What the CUDA sources include in place of the CUDA runtime headers: the real runtime, or, built with
// LUMINET_CPU_EMULATION, the CPU emulator (cpu-emulation.h) that runs the same kernels on the host so the
// backend is tested end to end on machines without a GPU. Kernels launch and take dynamic shared memory
// through the two macros below, the only spellings that differ between the two.
#pragma once

#ifdef LUMINET_CPU_EMULATION
#include "cpu-emulation.h"
#define LUMINET_LAUNCH(kernel, grid, block, sharedBytes, stream) \
  ::luminet::emulation::launcher(kernel, grid, block, sharedBytes, stream)
#define LUMINET_DYNAMIC_SHARED(type, name) type* name = ::luminet::emulation::dynamicShared<type>()
#else
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#define LUMINET_LAUNCH(kernel, grid, block, sharedBytes, stream) kernel<<<grid, block, sharedBytes, stream>>>
#define LUMINET_DYNAMIC_SHARED(type, name) extern __shared__ type name[]
#endif
