#!/usr/bin/env bash
# On the GPU machine: `forja serve --device cuda` under the load of `forja bench serve` (streamed
# /v1/completions, fixed prompt and output lengths, closed-loop clients), beside `forja serve` on
# the same machine's CPU for the smaller client counts. Prints a markdown table (with the engine's
# time per step in the model, sampling and delivery, from /metrics); keeps the JSON reports in
# $OUT (default: a temporary folder).
#   bench/gpu/serve.sh FORJA_BIN MODEL.gguf [CLIENTS...]   (default clients 1 16 64 256)
# Env: INPUT (prompt tokens, 128), OUTPUT (generated tokens, 128), REQUESTS_PER_CLIENT (2),
#      CPU_CLIENTS (client counts also run on the CPU, default "1 16").
set -euo pipefail
forja="${1:?usage: serve.sh FORJA_BIN MODEL.gguf [CLIENTS...]}"
model="${2:?usage: serve.sh FORJA_BIN MODEL.gguf [CLIENTS...]}"
shift 2
clients=("$@")
[ ${#clients[@]} -eq 0 ] && clients=(1 16 64 256)
input="${INPUT:-128}"; output="${OUTPUT:-128}"; per="${REQUESTS_PER_CLIENT:-2}"
read -r -a cpu_clients <<< "${CPU_CLIENTS:-1 16}"
out="${OUT:-$(mktemp -d)}"
mkdir -p "$out"
# shellcheck source=../../scripts/lib/cuda-bench.sh
. "$(dirname "$0")/../../scripts/lib/cuda-bench.sh"
cuda_toolkit_libraries
max=0
for c in "${clients[@]}"; do [ "$c" -gt "$max" ] && max=$c; done
pid=""
stop() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  pid=""
}
trap stop EXIT

serve() { # device port
  "$forja" serve "$model" --device "$1" --port "$2" --max-running "$max" \
    --max-pending $((max * 2)) --max-batched-tokens 2048 >"$out/serve-$1.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 600); do
    curl -fsS "http://127.0.0.1:$2/health" >/dev/null 2>&1 && return 0
    kill -0 "$pid" 2>/dev/null || { cat "$out/serve-$1.log" >&2; exit 1; }
    sleep 0.2
  done
  echo "forja serve --device $1 did not come up" >&2; exit 1
}

load() { # device port clients...
  local device=$1 port=$2; shift 2
  for c in "$@"; do
    curl -fsS "http://127.0.0.1:$port/metrics" >"$out/$device-c$c.before"
    "$forja" bench serve --url "http://127.0.0.1:$port" --clients "$c" --requests $((c * per)) \
      --input-tokens "$input" --output-tokens "$output" --duration 600 --json \
      --out "$out/$device-c$c.json" >/dev/null
    curl -fsS "http://127.0.0.1:$port/metrics" >"$out/$device-c$c.after"
  done
}

serve cuda 18181
grep -h "ready" "$out/serve-cuda.log" >&2 || true
load cuda 18181 "${clients[@]}"
stop
if [ ${#cpu_clients[@]} -gt 0 ]; then
  serve cpu 18182
  load cpu 18182 "${cpu_clients[@]}"
  stop
fi

echo "## forja serve on $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1): $(basename "$model")"
echo
echo "prompt $input tokens, $output generated, $per requests per client; CPU: $(nproc) threads"
echo
python3 - "$out" "${clients[@]}" <<'PY'
import json, sys, os
out, clients = sys.argv[1], sys.argv[2:]
def metrics(path):
    values = {}
    for line in open(path):
        if line.startswith("#") or " " not in line:
            continue
        name, value = line.rsplit(" ", 1)
        values[name.split("{")[0]] = values.get(name.split("{")[0], 0.0) + float(value)
    return values
def row(device, c):
    p = os.path.join(out, f"{device}-c{c}.json")
    if not os.path.exists(p):
        return None
    r = json.load(open(p))
    f = lambda x: "-" if x is None else f"{x:.1f}"
    # The engine's time per step, by phase (from /metrics before and after the load).
    a, b = metrics(os.path.join(out, f"{device}-c{c}.before")), metrics(os.path.join(out, f"{device}-c{c}.after"))
    steps = b.get("forja_sched_steps_total", 0) - a.get("forja_sched_steps_total", 0)
    per = lambda k: f"{(b.get(k, 0) - a.get(k, 0)) / steps * 1e3:.2f}" if steps else "-"
    phases = " | ".join(per(f"forja_engine_{p}_seconds_total") for p in ["model", "sample", "deliver"])
    return (f"| {device} | {c} | {r['requests_ok']}/{r['requests_ok'] + r['requests_failed']} | "
            f"{f(r['output_tokens_per_s'])} | {f(r['ttft_ms']['p50'])} | {f(r['itl_ms']['p50'])} | "
            f"{f(r['itl_ms']['p99'])} | {int(steps)} | {phases} |")
print("| device | clients | ok | output tok/s | TTFT p50 ms | ITL p50 ms | ITL p99 ms | steps | model ms/step | sample ms/step | deliver ms/step |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for device in ["cuda", "cpu"]:
    for c in clients:
        r = row(device, c)
        if r:
            print(r)
PY
echo
echo "JSON reports: $out"
