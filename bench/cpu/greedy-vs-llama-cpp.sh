#!/usr/bin/env bash
# Greedy completions of forja and llama.cpp (llama-simple) on the same GGUF files and prompt
# texts (plain completion, no chat template), and how many leading characters they share.
# Quantized models quantize activations too, so near-ties can resolve differently after a few
# tokens; this records where. Usage: bench/cpu/greedy-vs-llama-cpp.sh [TOKENS] > result.md
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
n="${1:-32}"
bin="$("$root/bench/cpu/build-llama-cpp.sh")"
data="${FORJA_TESTDATA:-$HOME/.cache/forja-testdata}"
forja="$root/target/release/forja"
[ -x "$forja" ] || (cd "$root" && cargo build --release --locked -p forja-cli >/dev/null)
prompts=("The capital of France is" "def fibonacci(n):" "Los tres colores primarios son")
echo "| model | prompt | shared chars | forja | llama.cpp |"
echo "|---|---|---|---|---|"
for model in SmolLM2-135M-Instruct.Q4_1.gguf qwen2.5-coder-0.5b-instruct-q4_k_m.gguf gemma-3-270m-q4_k_m.gguf; do
  for p in "${prompts[@]}"; do
    ours=$("$forja" run "$data/$model" --raw --temperature 0 --max-tokens "$n" "$p" 2>/dev/null |
      sed '/^\[length limit\]$/d')
    # llama-simple prints the prompt, then the continuation.
    peer=$("$bin/llama-simple" -m "$data/$model" -n "$n" "$p" 2>/dev/null)
    peer="${peer#*"$p"}"
    shared=$(python3 -c 'import os,sys
a,b=sys.argv[1],sys.argv[2]
i=0
while i<min(len(a),len(b)) and a[i]==b[i]: i+=1
print(f"{i} of {max(len(a),len(b))}")' "$ours" "$peer")
    esc() { printf '%s' "$1" | head -c 120 | tr '\n' ' ' | sed 's/|/\\|/g'; }
    echo "| $model | $p | $shared | $(esc "$ours") | $(esc "$peer") |"
  done
done
