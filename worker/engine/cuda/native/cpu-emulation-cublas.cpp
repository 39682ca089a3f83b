#ifdef LUMINET_CPU_EMULATION
// cuBLAS for the CPU emulator: the entry points cublas-loader.h declares, with cuBLAS's column-major
// semantics, computed in fp32 from fp16 or fp32 operands.

#include "cpu-emulation-cublas.h"

namespace luminet {

namespace {

struct EmulatedHandle {
  cudaStream_t stream = nullptr;
};

float read(const void* data, int type, size_t index) {
  return type == kCudaR16F ? __half2float(static_cast<const half*>(data)[index])
                           : static_cast<const float*>(data)[index];
}

void write(void* data, int type, size_t index, float value) {
  if (type == kCudaR16F) {
    static_cast<half*>(data)[index] = __float2half_rn(value);
  } else {
    static_cast<float*>(data)[index] = value;
  }
}

CublasStatus create(CublasHandle* handle) {
  *handle = new EmulatedHandle();
  return 0;
}

CublasStatus destroy(CublasHandle handle) {
  delete static_cast<EmulatedHandle*>(handle);
  return 0;
}

CublasStatus setStream(CublasHandle handle, cudaStream_t stream) {
  static_cast<EmulatedHandle*>(handle)->stream = stream;
  return 0;
}

CublasStatus setWorkspace(CublasHandle, void*, size_t) { return 0; }

CublasStatus gemmEx(CublasHandle handle, int transa, int transb, int m, int n, int k, const void* alphaPointer,
                    const void* a, int aType, int lda, const void* b, int bType, int ldb, const void* betaPointer,
                    void* c, int cType, int ldc, int computeType, int) {
  if (computeType != kCublasCompute32F) return 15;  // CUBLAS_STATUS_NOT_SUPPORTED
  const float alpha = *static_cast<const float*>(alphaPointer);
  const float beta = *static_cast<const float*>(betaPointer);
  emulation::submit(static_cast<EmulatedHandle*>(handle)->stream, [=] {
    for (int j = 0; j < n; ++j) {
      for (int i = 0; i < m; ++i) {
        float sum = 0.f;
        for (int p = 0; p < k; ++p) {
          const float x = read(a, aType, transa == kCublasOpN ? i + size_t(p) * lda : p + size_t(i) * lda);
          const float y = read(b, bType, transb == kCublasOpN ? p + size_t(j) * ldb : j + size_t(p) * ldb);
          sum += x * y;
        }
        const size_t at = i + size_t(j) * ldc;
        // beta = 0 must ignore C entirely (it may hold NaNs), as cuBLAS does.
        write(c, cType, at, alpha * sum + (beta == 0.f ? 0.f : beta * read(c, cType, at)));
      }
    }
  });
  return 0;
}

}  // namespace

const CublasApi& emulatedCublas() {
  static const CublasApi api{create, destroy, setStream, setWorkspace, gemmEx, "CPU emulation"};
  return api;
}

}  // namespace luminet

#endif  // LUMINET_CPU_EMULATION
