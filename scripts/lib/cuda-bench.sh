# Sourced by the scripts that run on the GPU machine (scripts/cuda/conformance, bench/gpu/*.sh).
#   cuda_toolkit_libraries       NVRTC and cuBLAS from the CUDA toolkit when the loader does not
#                                know them (/usr/local/cuda/lib64 on LD_LIBRARY_PATH)
#   random_llama_8b GPU_DECODE LAYERS TOKENIZER_DIR DIR
#                                a Llama-3-8B-shaped HF folder (LAYERS of its 32 layers, random f16
#                                weights written by gpu_decode) with TOKENIZER_DIR's Llama 3.1
#                                tokenizer.json and tokenizer_config.json, ready for forja quantize

cuda_toolkit_libraries() {
  if [ -d /usr/local/cuda/lib64 ]; then
    export LD_LIBRARY_PATH="/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  fi
}

random_llama_8b() {
  local bin="$1" layers="$2" tok="$3" dir="$4"
  "$bin" --random-llama "4096,$layers,14336,32,8,128256" "$dir" --write-only >/dev/null
  cp "$tok/tokenizer.json" "$tok/tokenizer_config.json" "$dir/"
}
