#!/usr/bin/env bash
# On the GPU machine: forja's GPU decoder on a GGUF — greedy tokens against forja's CPU decoder,
# prefill and decode speed at batch 1/16/64 with and without CUDA graphs — and llama.cpp's
# llama-bench (built here with CUDA from the pruned sdist that bench/gpu/pack-llama-cpp.sh makes)
# on the same file. Prints a markdown report.
#   bench/gpu/run.sh GPU_DECODE_BIN MODEL.gguf [LLAMA_SRC.tar.xz]
set -euo pipefail
bin="${1:?usage: run.sh GPU_DECODE_BIN MODEL.gguf [LLAMA_SRC.tar.xz]}"
model="${2:?usage: run.sh GPU_DECODE_BIN MODEL.gguf [LLAMA_SRC.tar.xz]}"
src="${3:-}"
# shellcheck source=../../scripts/lib/cuda-bench.sh
. "$(dirname "$0")/../../scripts/lib/cuda-bench.sh"
cuda_toolkit_libraries
echo "## $(basename "$model") on $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)"
echo
echo "forja (f16 weights dequantized from the file, f16 KV cache, greedy on the GPU):"
echo
"$bin" "$model" --prompt 512 --gen 128 --check 32 --batches 1,16,64 2>&1
if [ -n "$src" ]; then
  "$(dirname "$0")/llama-bench.sh" "$src" "$model"
fi
