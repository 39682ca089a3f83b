// Turns a failed CUDA runtime call into a C++ exception that names the call and where it was made; the
// addon turns those into JavaScript errors.
#pragma once
#include "gpu.h"

#include <stdexcept>
#include <string>

namespace luminet {

class CudaError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

inline void checkCuda(cudaError_t status, const char* call, const char* file, int line) {
  if (status == cudaSuccess) return;
  throw CudaError(std::string(call) + " failed: " + cudaGetErrorString(status) + " (" + file + ":" +
                  std::to_string(line) + ")");
}

}  // namespace luminet

#define CUDA_CHECK(call) ::luminet::checkCuda((call), #call, __FILE__, __LINE__)
