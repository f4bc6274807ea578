#!/usr/bin/env bash
# Greedy completions of forja and llama.cpp (llama-simple) on the same GGUF files and prompt
# texts (plain completion, no chat template), and how many leading characters they share.
# The peer's side is scripts/goldens/llama_cpp_greedy.py (same models, prompts and length as
# the committed goldens). Usage: bench/cpu/greedy-vs-llama-cpp.sh > result.md
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
bin="$("$root/bench/cpu/build-llama-cpp.sh")"
data="${FORJA_TESTDATA:-$HOME/.cache/forja-testdata}"
(cd "$root" && cargo build --release --locked --quiet -p forja-cli)
forja="$root/target/release/forja"
peer="$(mktemp)"
trap 'rm -f "$peer"' EXIT
python3 "$root/scripts/goldens/llama_cpp_greedy.py" "$bin" "$data" "$peer"
python3 - "$forja" "$data" "$peer" <<'PY'
import json, subprocess, sys
forja, data, peer = sys.argv[1], sys.argv[2], json.load(open(sys.argv[3]))
n = peer["tokens"]
print("| model | prompt | shared chars | forja | llama.cpp |")
print("|---|---|---|---|---|")
esc = lambda t: t[:120].replace("\n", " ").replace("|", "\\|")
for model, prompts in peer["models"].items():
    for prompt, theirs in prompts.items():
        run = subprocess.run([forja, "run", f"{data}/{model}", "--raw", "--temperature", "0",
                              "--max-tokens", str(n), prompt], capture_output=True, check=True)
        ours = run.stdout.decode().removesuffix("\n").removesuffix("[length limit]").removesuffix("\n")
        shared = 0
        while shared < min(len(ours), len(theirs)) and ours[shared] == theirs[shared]:
            shared += 1
        print(f"| {model} | {prompt} | {shared} of {max(len(ours), len(theirs))} | {esc(ours)} | {esc(theirs)} |")
PY
