#!/usr/bin/env bash
# `forja run`'s peak resident memory against `forja plan --here` for the same model and context:
# a short prompt and one that nearly fills the context (the plan prices a full context and a
# 512-token step). Prints a Markdown table.
#
# Usage: bench/cpu/run-memory.sh [CTX]   (default 2048)
# Env: FORJA_BIN (default target/release/forja), MODELS (default: the three real test GGUFs).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
forja="${FORJA_BIN:-$root/target/release/forja}"
ctx="${1:-2048}"
data="${FORJA_TESTDATA:-$HOME/.cache/forja-testdata}"
models="${MODELS:-SmolLM2-135M-Instruct.Q4_1.gguf qwen2.5-coder-0.5b-instruct-q4_k_m.gguf gemma-3-270m-q4_k_m.gguf}"
[ -x "$forja" ] || { echo "no forja binary at $forja: cargo build --release -p forja-cli" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "GNU time is needed: apt-get install time" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# Common English words in a fixed pseudo-random order: ~1 token a word.
python3 - "$work/words.txt" "$ctx" <<'PY'
import random, sys
random.seed(1)
words = ("the of and to in a is that for it as was with be by on not he this are or his from at "
         "which but have an they you were her she there been one all we their").split()
count = max(4000, int(sys.argv[2]))
open(sys.argv[1], "w").write(" ".join(random.choice(words) for _ in range(count)))
PY
echo "| model | prompt | context | plan MB (weights / KV / activations / process) | peak MB | plan / peak |"
echo "|---|---|---|---|---|---|"
for m in $models; do
  path="$data/$m"
  plan=$("$forja" plan "$path" --here --ctx "$ctx" --json | python3 -c '
import json, sys
m = json.load(sys.stdin)["memory"]
print(m["total_bytes"], "%.1f / %.1f / %.1f / %.1f" % tuple(m[k] / 1e6 for k in
      ("weights_bytes", "kv_cache_bytes", "activations_bytes", "overhead_bytes")))')
  for words in 40 $((ctx * 3 / 4)); do
    python3 -c 'import sys; w = open(sys.argv[1]).read().split()[:int(sys.argv[2])]; print(" ".join(w))' \
      "$work/words.txt" "$words" > "$work/prompt.txt"
    peak_kb=$( { /usr/bin/time -f "%M" "$forja" run "$path" --raw --temperature 0 --max-tokens 16 \
      --ctx "$ctx" < "$work/prompt.txt" > /dev/null; } 2>&1 | tail -1)
    total=${plan%% *}
    python3 -c 'import sys; t, kb = int(sys.argv[1]), int(sys.argv[2]); print("| %s | ~%s words | %s | %.1f (%s) | %.1f | %.2f |" % (sys.argv[3], sys.argv[4], sys.argv[5], t / 1e6, sys.argv[6], kb * 1024 / 1e6, t / (kb * 1024)))' \
      "$total" "$peak_kb" "$m" "$words" "$ctx" "${plan#* }"
  done
done
