#!/usr/bin/env bash
# On the GPU machine: builds llama.cpp's llama-bench with CUDA for the card present, from the
# pruned source that bench/gpu/pack-llama-cpp.sh makes (once per machine), and prints its path.
#   bench/gpu/build-llama-bench.sh LLAMA_SRC.tar.xz
set -euo pipefail
src="${1:?usage: build-llama-bench.sh LLAMA_SRC.tar.xz}"
work=/tmp/forja-llama-cuda
if [ ! -x "$work/build/bin/llama-bench" ]; then
  rm -rf "$work" && mkdir -p "$work"
  tar xJf "$src" -C "$work"
  cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d .)
  cmake -S "$work/llama.cpp" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$cap" -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
    -DLLAMA_BUILD_APP=OFF >"$work/cmake.log" 2>&1 || { tail -30 "$work/cmake.log" >&2; exit 1; }
  cmake --build "$work/build" --target llama-bench -j "$(nproc)" >"$work/build.log" 2>&1 ||
    { tail -30 "$work/build.log" >&2; exit 1; }
fi
echo "$work/build/bin/llama-bench"
