// The CPU emulator's cuBLAS (cpu-emulation-cublas.cpp): what loadCublas answers in an emulated build.
#pragma once
#include "cublas-loader.h"

namespace luminet {

const CublasApi& emulatedCublas();

}  // namespace luminet
