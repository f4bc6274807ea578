#!/usr/bin/env bash
# On the GPU machine: builds llama.cpp's llama-bench with CUDA for the card present, from the
# pruned source that bench/gpu/pack-llama-cpp.sh makes (once per machine), then, given a model,
# runs it the way forja's GPU benchmarks compare against (prompt 512, 128 generated, every layer
# on the GPU, flash attention on, 3 repetitions) and prints its markdown table.
#   bench/gpu/llama-bench.sh LLAMA_SRC.tar.xz [MODEL.gguf]
set -euo pipefail
src="${1:?usage: llama-bench.sh LLAMA_SRC.tar.xz [MODEL.gguf]}"
model="${2:-}"
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
if [ -n "$model" ]; then
  echo
  echo "llama.cpp (llama-bench, CUDA, all layers on the GPU, flash attention on):"
  echo
  # DEPTHS: context already in the cache before each test (llama-bench's -d), 0 by default.
  "$work/build/bin/llama-bench" -m "$model" -p 512 -n 128 -d "${DEPTHS:-0}" -ngl 99 -fa 1 -r 3 \
    -o md 2>/dev/null
fi
