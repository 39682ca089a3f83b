#!/usr/bin/env bash
# The CUDA backend's run on a GPU machine (issue #9), in two halves. From the project root:
#
#   scripts/gpu-cuda.sh prepare      on the CPU machine: builds the addon (sm_80 and sm_90), bundles the
#                                    entry points with ../shared/device/prepare.sh and copies the addon and
#                                    the Node-API headers (for a rebuild there) into .gpu/
#   source .gpu/setup.sh && scripts/gpu-cuda.sh run "$OUT"
#                                    on the GPU machine (the device tool's run, carry [".gpu"]): checks that
#                                    the addon loads (else rebuilds it there with the machine's nvcc), runs
#                                    the correctness check against the CPU engine, then the engine benchmark
#                                    on cuda and on webgpu, then WebGPU's own check against the CPU engine
#                                    (gpu-check: logits, greedy picks taken in its graph); everything lands
#                                    in $OUT
#
# Each step's output goes to its own file in $OUT, so a later step failing keeps what the earlier ones
# found. The benchmark generates bench-1b with 16 layers on the machine (about 2 GB).
set -uo pipefail

prepare() {
  set -e
  npm run build:cuda
  ../shared/device/prepare.sh scripts/cuda-check.ts scripts/bench-engine.ts scripts/gpu-check.ts
  cp build/luminet-cuda.node .gpu/
  rm -rf .gpu/napi && mkdir -p .gpu/napi
  cp node_modules/node-api-headers/include/*.h node_modules/node-addon-api/*.h .gpu/napi/
  du -sh .gpu
}

# Rebuilds the addon with this machine's nvcc, for when the one built elsewhere does not load.
rebuild() {
  local nvcc objects=()
  nvcc=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
  local arch
  arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -n1 | tr -d .)
  for source in worker/engine/cuda/native/*.cu worker/engine/cuda/native/*.cpp; do
    "$nvcc" -std=c++17 -O3 -Xcompiler -fPIC -I .gpu/napi -DNAPI_VERSION=8 -DNODE_ADDON_API_CPP_EXCEPTIONS \
      -gencode "arch=compute_$arch,code=sm_$arch" -c -o ".gpu/$(basename "$source").o" "$source" || return 1
    objects+=(".gpu/$(basename "$source").o")
  done
  "$nvcc" -shared --cudart static -o .gpu/luminet-cuda-device.node "${objects[@]}" -ldl
}

# Finds a libcublas for the addon where the loader's path has none: CUDA's lib64, or PyTorch's pip packages.
find_cublas() {
  ldconfig -p | grep -q 'libcublas\.so' && return 0
  local dirs=(/usr/local/cuda/lib64 /usr/local/cuda-*/lib64 /usr/lib/x86_64-linux-gnu)
  local site
  for site in $(python3 -c 'import site; print(" ".join(site.getsitepackages()))' 2>/dev/null); do
    dirs+=("$site/nvidia/cublas/lib" "$site/nvidia/cu13/lib")
  done
  local found
  found=$(find "${dirs[@]}" -maxdepth 1 -name 'libcublas.so.1[0-9]*' 2>/dev/null | sort -r | head -n1)
  [ -n "$found" ] && export LUMINET_CUBLAS_LIBRARY="$found"
}

run() {
  local out=${1:?usage: gpu-cuda.sh run OUT}
  mkdir -p "$out"
  nvidia-smi >"$out/nvidia-smi.txt" 2>&1
  [ -n "${LUMINET_CUBLAS_LIBRARY:-}" ] || find_cublas
  echo "cuBLAS: ${LUMINET_CUBLAS_LIBRARY:-from the default library path}" >"$out/addon.txt"
  export LUMINET_CUDA_ADDON="$PWD/.gpu/luminet-cuda.node"
  if ! node -e 'console.log(require(process.env.LUMINET_CUDA_ADDON).deviceCount(), "device(s)")' >>"$out/addon.txt" 2>&1; then
    echo "prebuilt addon does not load; rebuilding here" >>"$out/addon.txt"
    rebuild >>"$out/addon.txt" 2>&1 && export LUMINET_CUDA_ADDON="$PWD/.gpu/luminet-cuda-device.node"
  fi
  timeout 120 node .gpu/cuda-check.mjs --out "$out" >"$out/cuda-check.log" 2>&1
  echo "cuda-check exit $?" >>"$out/cuda-check.log"
  timeout 240 node .gpu/bench-engine.mjs --device cuda --json --out "$out" >"$out/bench-cuda.log" 2>&1
  echo "bench cuda exit $?" >>"$out/bench-cuda.log"
  timeout 180 node .gpu/bench-engine.mjs --device webgpu --json --out "$out" >"$out/bench-webgpu.log" 2>&1
  echo "bench webgpu exit $?" >>"$out/bench-webgpu.log"
  # Last and short: the device tool allows a command 600 s in all.
  timeout 45 node .gpu/gpu-check.mjs --device webgpu --out "$out" >"$out/gpu-check.log" 2>&1
  echo "gpu-check exit $?" >>"$out/gpu-check.log"
  tail -n 3 "$out"/*.log
}

case "${1:-}" in
  prepare) prepare ;;
  run) run "${2:-}" ;;
  *) echo "usage: scripts/gpu-cuda.sh prepare | run OUT" >&2; exit 2 ;;
esac
