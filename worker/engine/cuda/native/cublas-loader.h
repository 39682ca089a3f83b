// cuBLAS, opened at run time with dlopen: the addon builds where only nvcc and the CUDA runtime are
// installed (no cuBLAS headers or libraries), and runs wherever the GPU host has libcublas. Only the few
// entry points the engine calls are declared, with the ABI values of cublas_api.h and library_types.h.
#pragma once
#include "gpu.h"

#include <cstddef>
#include <string>

namespace luminet {

using CublasHandle = void*;
using CublasStatus = int;

// cublasOperation_t, cudaDataType_t, cublasComputeType_t, cublasGemmAlgo_t values.
constexpr int kCublasOpN = 0;
constexpr int kCublasOpT = 1;
constexpr int kCudaR32F = 0;
constexpr int kCudaR16F = 2;
constexpr int kCublasCompute32F = 68;
constexpr int kCublasGemmDefault = -1;

struct CublasApi {
  CublasStatus (*create)(CublasHandle*);
  CublasStatus (*destroy)(CublasHandle);
  CublasStatus (*setStream)(CublasHandle, cudaStream_t);
  CublasStatus (*setWorkspace)(CublasHandle, void*, size_t);
  CublasStatus (*gemmEx)(CublasHandle, int transa, int transb, int m, int n, int k, const void* alpha,
                         const void* a, int aType, int lda, const void* b, int bType, int ldb, const void* beta,
                         void* c, int cType, int ldc, int computeType, int algo);
  /** The library file that was opened, for error messages and logs. */
  std::string path;
};

/**
 * Opens libcublas: LUMINET_CUBLAS_LIBRARY if set, else libcublas.so.13 / .so.12 / .so on the loader's
 * path and under CUDA_HOME (or /usr/local/cuda)/lib64. Throws a CudaError that lists what was tried.
 */
const CublasApi& loadCublas();

/** Throws a CudaError naming the call when a cuBLAS status is not success. */
void checkCublas(CublasStatus status, const char* call);

}  // namespace luminet
