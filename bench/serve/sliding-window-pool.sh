#!/usr/bin/env bash
# What a fixed KV budget holds for a model whose layers mostly keep a sliding window: `forja
# serve` on a GGUF (Gemma 3 by default: 5 of 6 layers keep 512 positions) with --kv-memory
# fixed, driven by `forja bench serve` with long prompts; reports the pool, the peak of running
# requests and KV blocks (polled from /metrics), preemptions, prompt tokens per request and the
# load's throughput.
# Usage: bench/serve/sliding-window-pool.sh [MODEL.gguf]
# Env: FORJA (binary, default target/release/forja, built if missing), KV (--kv-memory, 96MiB),
#      CLIENTS (6), REQUESTS (12), INPUT (prompt tokens, 1500), OUTPUT (32), OUT (JSON folder).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
model="${1:-${FORJA_TESTDATA:-$HOME/.cache/forja-testdata}/gemma-3-270m-q4_k_m.gguf}"
forja="${FORJA:-$root/target/release/forja}"
if [ ! -x "$forja" ]; then
  cargo build --release --locked --quiet -p forja-cli --manifest-path "$root/Cargo.toml"
fi
kv="${KV:-96MiB}"; clients="${CLIENTS:-6}"; requests="${REQUESTS:-12}"
input="${INPUT:-1500}"; output="${OUTPUT:-32}"
out="${OUT:-$(mktemp -d)}"
mkdir -p "$out"
port=18090
"$forja" serve "$model" --port "$port" --kv-memory "$kv" --max-running "$clients" \
  2>"$out/serve.log" &
pid=$!
poller=""
stop() {
  [ -n "$poller" ] && kill "$poller" 2>/dev/null || true
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
trap stop EXIT
url="http://127.0.0.1:$port"
for _ in $(seq 1 600); do
  curl -fsS "$url/health" >/dev/null 2>&1 && break
  sleep 0.2
done
metric() { grep -E "^$1(\{[^}]*\})? " | awk '{print $2}' | sort -g | tail -1; }
(
  while true; do
    m="$(curl -fsS "$url/metrics" 2>/dev/null || true)"
    echo "$(echo "$m" | metric forja_kv_blocks_used) $(echo "$m" | metric forja_sched_running_requests)"
    sleep 0.2
  done
) >"$out/poll.txt" &
poller=$!
"$forja" bench serve --url "$url" --clients "$clients" --requests "$requests" \
  --input-tokens "$input" --output-tokens "$output" --duration 1200 --json \
  --out "$out/load.json" >/dev/null
m="$(curl -fsS "$url/metrics")"
kill "$poller" 2>/dev/null || true
poller=""
ready="$(grep -m1 '^ready' "$out/serve.log" || true)"
peak_blocks="$(awk '{print $1}' "$out/poll.txt" | sort -g | tail -1)"
peak_running="$(awk '{print $2}' "$out/poll.txt" | sort -g | tail -1)"
python3 - "$out/load.json" "$ready" "$peak_blocks" "$peak_running" \
  "$(echo "$m" | metric forja_sched_preemptions_total)" "$(echo "$m" | metric forja_sched_steps_total)" \
  "$(echo "$m" | metric forja_engine_model_seconds_total)" \
  "$(echo "$m" | metric forja_engine_sample_seconds_total)" \
  "$(echo "$m" | metric forja_tokens_prompt_total)" <<'PY'
import json, sys
load = json.load(open(sys.argv[1]))
ready, blocks, running, preempted, steps, model_s, sample_s, prompt = sys.argv[2:10]
print(ready)
print(f"prompt tokens per request: {float(prompt) / max(load['requests_ok'], 1):.0f}")
print("| peak KV blocks used | peak running | preemptions | output tok/s | mean TTFT ms | "
      "requests | steps | model s | sampling s |")
print("|---|---|---|---|---|---|---|---|---|")
t = load.get("ttft_ms", {})
print(f"| {blocks} | {running} | {preempted} | {load['output_tokens_per_s']:.1f} | "
      f"{t.get('mean', 0):.0f} | {load['requests_ok']} in {load['duration_s']:.1f} s | "
      f"{steps} | {float(model_s):.1f} | {float(sample_s):.1f} |")
PY
echo "JSON and logs: $out"
