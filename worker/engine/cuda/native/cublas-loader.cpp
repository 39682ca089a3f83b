#include "cublas-loader.h"

#include <dlfcn.h>

#include <cstdlib>
#include <mutex>
#include <vector>

#include "cuda-check.h"

#ifdef LUMINET_CPU_EMULATION
#include "cpu-emulation-cublas.h"
#endif

namespace luminet {

#ifndef LUMINET_CPU_EMULATION
namespace {

std::vector<std::string> candidates() {
  std::vector<std::string> paths;
  if (const char* explicitPath = std::getenv("LUMINET_CUBLAS_LIBRARY")) {
    paths.emplace_back(explicitPath);
    return paths;
  }
  const char* home = std::getenv("CUDA_HOME");
  const std::string lib = std::string(home ? home : "/usr/local/cuda") + "/lib64/";
  for (const char* name : {"libcublas.so.13", "libcublas.so.12", "libcublas.so"}) {
    paths.emplace_back(name);
    paths.push_back(lib + name);
  }
  return paths;
}

template <typename Fn>
void bind(void* library, const char* symbol, Fn& target, const std::string& path) {
  target = reinterpret_cast<Fn>(dlsym(library, symbol));
  if (!target) throw CudaError(path + " has no " + symbol);
}

CublasApi open() {
  std::string tried;
  for (const std::string& path : candidates()) {
    void* library = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!library) {
      tried += "\n  " + path + ": " + dlerror();
      continue;
    }
    CublasApi api{};
    api.path = path;
    bind(library, "cublasCreate_v2", api.create, path);
    bind(library, "cublasDestroy_v2", api.destroy, path);
    bind(library, "cublasSetStream_v2", api.setStream, path);
    bind(library, "cublasSetWorkspace_v2", api.setWorkspace, path);
    bind(library, "cublasGemmEx", api.gemmEx, path);
    return api;
  }
  throw CudaError("cuBLAS not found; set LUMINET_CUBLAS_LIBRARY to libcublas.so. Tried:" + tried);
}

}  // namespace
#endif

const CublasApi& loadCublas() {
#ifdef LUMINET_CPU_EMULATION
  return emulatedCublas();
#else
  static std::once_flag once;
  static CublasApi api;
  static std::string failure;
  std::call_once(once, [] {
    try {
      api = open();
    } catch (const CudaError& error) {
      failure = error.what();
    }
  });
  if (!failure.empty()) throw CudaError(failure);
  return api;
#endif
}

void checkCublas(CublasStatus status, const char* call) {
  if (status != 0) throw CudaError(std::string(call) + " failed with cuBLAS status " + std::to_string(status));
}

}  // namespace luminet
