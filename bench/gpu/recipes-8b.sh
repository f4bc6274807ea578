#!/usr/bin/env bash
# GGUF recipes on the GPU machine: a Llama-3-8B-shaped model (LAYERS of its 32 layers, 8 by
# default; random f16 weights, Llama 3.1's tokenizer) quantized by `forja quantize` to each of
# RECIPES (default "q5_k_m q4_k_m"); forja's GPU decoder with the GGUF blocks read as stored on
# each, with every matrix dequantized to f16 on the first, and llama.cpp's llama-bench (built
# there from the pruned sdist, see pack-llama-cpp.sh) on the same files.
#   bench/gpu/recipes-8b.sh FORJA GPU_DECODE TOKENIZER_DIR LLAMA_SRC.tar.xz
set -euo pipefail
forja="${1:?usage: recipes-8b.sh FORJA GPU_DECODE TOKENIZER_DIR LLAMA_SRC.tar.xz}"
bin="${2:?usage: recipes-8b.sh FORJA GPU_DECODE TOKENIZER_DIR LLAMA_SRC.tar.xz}"
tok="${3:?usage: recipes-8b.sh FORJA GPU_DECODE TOKENIZER_DIR LLAMA_SRC.tar.xz}"
src="${4:?usage: recipes-8b.sh FORJA GPU_DECODE TOKENIZER_DIR LLAMA_SRC.tar.xz}"
here="$(cd "$(dirname "$0")" && pwd)"
work="${WORK:-/tmp/forja-recipes}"
layers="${LAYERS:-8}"
recipes="${RECIPES:-q5_k_m q4_k_m}"
# shellcheck source=../../scripts/lib/cuda-bench.sh
. "$(dirname "$0")/../../scripts/lib/cuda-bench.sh"
cuda_toolkit_libraries
mkdir -p "$work"
echo "## Llama-3-8B shape ($layers layers) on $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)"
"$here/llama-bench.sh" "$src" >"$work/llama-build.log" 2>&1 &
build=$!
t0=$(date +%s)
random_llama_8b "$bin" "$layers" "$tok" "$work/hf"
for q in $recipes; do
  "$forja" quantize "$work/hf" --to "$q" -o "$work/$q.gguf" >"$work/quantize.log" 2>&1 ||
    { cat "$work/quantize.log"; exit 1; }
done
rm -rf "$work/hf"
echo "made and quantized in $(($(date +%s) - t0)) s ($(nproc) cores)"
first=
for q in $recipes; do
  echo
  echo "forja $q, GGUF blocks read as stored:"
  "$bin" "$work/$q.gguf" --quantized --prompt 512 --gen 128 --check 0 --batches 1,16,64 2>&1 |
    grep -E "weights|pp512|graphs"
  first="${first:-$q}"
done
echo
echo "forja $first, every matrix dequantized to f16:"
"$bin" "$work/$first.gguf" --prompt 512 --gen 128 --check 0 --batches 1,16,64 2>&1 |
  grep -E "weights|pp512|graphs"
wait "$build" || { tail -30 "$work/llama-build.log"; exit 1; }
for q in $recipes; do
  "$here/llama-bench.sh" "$src" "$work/$q.gguf"
done
