#!/usr/bin/env bash
# Where forja spends CPU time: perf samples of `forja bench model` (profiling build: release
# code with symbols), top symbols by self time. Needs `perf` (apt-get install linux-perf).
# Usage: bench/cpu/profile.sh MODEL.gguf PROMPT_TOKENS GEN_TOKENS [TOP]
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
model="$1" pp="$2" tg="$3" top="${4:-12}"
(cd "$root" && cargo build --profile profiling --locked -p forja-cli >/dev/null)
data="$(mktemp)"
log="$(mktemp)"
trap 'rm -f "$data" "$log"' EXIT
perf record -q -F 999 -g -o "$data" "$root/target/profiling/forja" bench model "$model" \
  -p "$pp" -n "$tg" -r 1 >"$log" 2>&1 || { cat "$log" >&2; exit 1; }
perf report -i "$data" --no-children --sort symbol 2>/dev/null |
  grep -E '^ +[0-9.]+%' | head -n "$top"
