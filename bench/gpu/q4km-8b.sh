#!/usr/bin/env bash
# On the GPU machine: a Llama-3-8B-shaped model (random weights, Llama 3.1's tokenizer) quantized
# to Q4_K_M by `forja quantize`, then forja's GPU decoder on that file — GGUF blocks read by the
# GEMV and tensor-core kernels (`--quantized`), and dequantized to f16 for cuBLAS — and, when
# the pruned llama.cpp source is given, llama-bench (CUDA) on the same file. Prints a markdown
# report.
#   bench/gpu/q4km-8b.sh FORJA GPU_DECODE TOKENIZER_DIR [LLAMA_SRC.tar.xz]
# TOKENIZER_DIR holds tokenizer.json and tokenizer_config.json (forja-testdata's llama3_1).
# WORK (default /tmp/forja-8b) keeps the model between runs on the same machine; GEMV_BENCH=0
# and F16=0 leave out the kernel benchmark and the f16 run; BATCHES (default 1,16,64,256) and
# F16_BATCHES (default 1) are the decode batch sizes of the quantized and the f16 run;
# SAMPLE=1 adds a quantized decode run with tokens sampled on the GPU (temperature 0.7, top-k 40,
# top-p 0.95, min-p 0.05) instead of greedy picks; DEPTHS=0,4096,16384 also times batch-1 decode
# (and llama-bench's tests) after that many tokens already in the cache; LAYERS (default 32)
# builds the model with fewer layers of the same shape (quicker to make: the 32-layer file takes
# ~6 min to write and quantize on a 16-core machine).
set -euo pipefail
forja="${1:?usage: q4km-8b.sh FORJA GPU_DECODE TOKENIZER_DIR [LLAMA_SRC.tar.xz]}"
bin="${2:?usage: q4km-8b.sh FORJA GPU_DECODE TOKENIZER_DIR [LLAMA_SRC.tar.xz]}"
tok="${3:?usage: q4km-8b.sh FORJA GPU_DECODE TOKENIZER_DIR [LLAMA_SRC.tar.xz]}"
src="${4:-}"
work="${WORK:-/tmp/forja-8b}"
# shellcheck source=../../scripts/lib/cuda-bench.sh
. "$(dirname "$0")/../../scripts/lib/cuda-bench.sh"
cuda_toolkit_libraries
mkdir -p "$work"
layers="${LAYERS:-32}"
gguf="$work/llama-8b-shape-$layers.q4_k_m.gguf"
echo "## Llama-3-8B shape ($layers layers), Q4_K_M, on" \
  "$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)"
echo
if [ "${GEMV_BENCH:-1}" = 1 ]; then
  "$bin" --gemv-bench
  echo
fi
# llama.cpp builds while the model is made (both only once per machine); the timed runs wait
# for both.
if [ -n "$src" ]; then
  "$(dirname "$0")/llama-bench.sh" "$src" >"$work.llama-build.log" 2>&1 &
  build=$!
fi
if [ ! -f "$gguf" ]; then
  t0=$(date +%s)
  random_llama_8b "$bin" "$layers" "$tok" "$work/hf"
  t1=$(date +%s)
  "$forja" quantize "$work/hf" --to q4_k_m -o "$gguf" >&2
  t2=$(date +%s)
  rm -rf "$work/hf"
  echo "made the f16 folder in $((t1 - t0)) s, quantized it to Q4_K_M in $((t2 - t1)) s" \
    "($(nproc) cores): $(du -h "$gguf" | cut -f1)"
  echo
fi
if [ -n "$src" ]; then
  wait "$build" || { cat "$work.llama-build.log"; exit 1; }
fi
echo "forja, GGUF blocks read as stored (GEMV below 4 rows, tensor-core tiles up to 64 rows," \
  "f16 copy + cuBLAS above):"
echo
"$bin" "$gguf" --quantized --prompt 512 --gen 128 --check 0 --batches "${BATCHES:-1,16,64,256}" 2>&1
if [ "${SAMPLE:-0}" = 1 ]; then
  echo
  echo "forja, GGUF blocks, tokens sampled on the GPU:"
  echo
  "$bin" "$gguf" --quantized --prompt 16 --gen 128 --check 0 --batches "${BATCHES:-1,16,64,256}" \
    --sample 2>&1 | grep tg
fi
for d in $(echo "${DEPTHS:-}" | tr , ' '); do
  [ "$d" = 0 ] && continue
  "$bin" "$gguf" --quantized --prompt 16 --gen 128 --check 0 --depth "$d" --batches 1 2>&1 |
    grep tg
done
if [ "${F16:-1}" = 1 ]; then
  echo
  echo "forja, weights dequantized to f16 at load:"
  echo
  "$bin" "$gguf" --prompt 512 --gen 128 --check 0 --batches "${F16_BATCHES:-1}" 2>&1
fi
if [ -n "$src" ]; then
  "$(dirname "$0")/llama-bench.sh" "$src" "$gguf"
fi
