#!/usr/bin/env bash
# Fine-tuning speed and peak memory on the CPU: `forja tune` beside HF PEFT + transformers on
# the same model, sequence length, batch, rank and target modules (LoRA), and beside
# transformers alone for full fine-tuning (`forja tune --full`); and what `forja plan` predicts
# for each forja run. Writes RESULTS_DIR/DATE-tune-vs-peft.md and .json.
#
# Usage: bench/tune/peft-compare.sh [RESULTS_DIR]        (default: bench/results)
# Env: MODEL (default ~/.cache/forja-testdata/SmolLM2-135M-Instruct.Q4_1.gguf), FORJA_BIN
#   (default target/release/forja), SEQ (256), STEPS (4; the first step is warm-up and left
#   out of the speed), THREADS (2), RANK (16), VENV (default ~/.cache/forja-bench-venv),
#   WORK (default: a temporary folder), SWEEP (default "128 512": more sequence lengths at
#   which forja's QLoRA runs, with and without checkpointing, are set beside `forja plan`),
#   PEERS (default 1; 0: forja's QLoRA runs on the GGUF and their plans only — no Python
#   environment, no f32 folder, no PEFT or transformers rows), RECORDS (alpaca, the default,
#   or text: plain `{"text"}` records, for base models without a chat template; PEERS=0 only).
#
# The HF folder both trainers load is the GGUF dequantized to f32 by transformers
# (bench/tune/gguf_to_hf.py). Every record is longer than SEQ tokens, so each training
# sequence is exactly SEQ tokens. Peak memory is the process's maximum resident set size
# (GNU time's %M for forja, ru_maxrss for Python: the interpreter and PyTorch count too, so
# the Python process's resident size after loading is reported beside it). QLoRA (the GGUF
# base kept quantized) has no CPU peer: PEFT's QLoRA needs bitsandbytes' CUDA kernels.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
here="$root/bench/tune"
model="${MODEL:-$HOME/.cache/forja-testdata/SmolLM2-135M-Instruct.Q4_1.gguf}"
forja="${FORJA_BIN:-$root/target/release/forja}"
results="${1:-$root/bench/results}"
seq_len="${SEQ:-256}"
steps="${STEPS:-4}"
threads="${THREADS:-2}"
rank="${RANK:-16}"
venv="${VENV:-$HOME/.cache/forja-bench-venv}"
work="${WORK:-$(mktemp -d)}"
targets="q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
sweep="${SWEEP-128 512}"
peers="${PEERS:-1}"
records="${RECORDS:-alpaca}"
case "$records" in
  alpaca) ;;
  text) [ "$peers" = 0 ] || { echo "RECORDS=text needs PEERS=0 (the peers' script reads alpaca records)" >&2; exit 1; } ;;
  *) echo "RECORDS must be alpaca or text, not $records" >&2; exit 1 ;;
esac

[ -x "$forja" ] || { echo "no forja binary at $forja: cargo build --release -p forja-cli" >&2; exit 1; }
[ -f "$model" ] || { echo "no model at $model: run scripts/fetch-testdata or set MODEL" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "GNU time is needed: apt-get install time" >&2; exit 1; }
mkdir -p "$work" "$results"
export FORJA_HOME="$work/home" RAYON_NUM_THREADS="$threads" OMP_NUM_THREADS="$threads"
hf="$work/hf-f32"
if [ "$peers" != 0 ]; then
  if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
  fi
  "$venv/bin/pip" install --quiet -r "$here/requirements.txt"
  py="$venv/bin/python"
  if [ ! -f "$hf/config.json" ]; then
    "$py" "$here/gguf_to_hf.py" "$model" "$hf" --dtype f32
  fi
fi

# Records longer than any SEQ: contract text from CUAD, else repeated alpaca answers.
data="$work/long.jsonl"
python3 - "$data" "$root/../shared/data" "$records" <<'EOF'
import glob, json, os, sys
out, shared, records = sys.argv[1], sys.argv[2], sys.argv[3]
texts = [open(p, errors="replace").read()
         for p in sorted(glob.glob(os.path.join(shared, "cuad/full_contract_txt/*.txt")))[:40]]
if not texts:
    rows = json.load(open(os.path.join(shared, "sft/alpaca_en_demo.json")))
    texts = [" ".join(r["output"] for r in rows[i:i + 40]) for i in range(0, 1600, 40)]
with open(out, "w") as f:
    for t in texts:
        t = " ".join(t.split())[:12000]
        if records == "text":
            f.write(json.dumps({"text": t}) + "\n")
        else:
            f.write(json.dumps({"instruction": "Continue the text.", "input": t[:200],
                                "output": t[200:]}) + "\n")
EOF

runs="$work/runs.jsonl"
: > "$runs"
forja_run() { # NAME MODEL [extra tune options...]; --full as the first option: no LoRA options
  local name="$1" base="$2"
  shift 2
  local out="$work/out-$name"
  local method=(--rank "$rank" --targets "$targets" --dropout 0.05)
  if [ "${1:-}" = --full ]; then method=(); fi
  rm -rf "$out"
  /usr/bin/time -f "%M" -o "$work/$name.rss" "$forja" tune --model "$base" --data "$data" \
    --out "$out" --steps "$steps" --batch 1 --grad-accum 1 --eval-split 0 --save-every 0 \
    --max-len "$seq_len" "${method[@]}" "$@" \
    2> "$work/$name.log" >/dev/null || { cat "$work/$name.log" >&2; exit 1; }
  python3 - "$name" "$out/loss.csv" "$work/$name.rss" "$*" >> "$runs" <<'EOF'
import csv, json, sys
name, curve, rss, extra = sys.argv[1:5]
rows = list(csv.DictReader(open(curve)))
timed = rows[1:] or rows
tps = sum(float(r["tokens_per_s"]) for r in timed) / len(timed)
print(json.dumps({"run": name, "trainer": "forja", "extra": extra, "tokens_per_s": tps,
                  "peak_rss_bytes": int(open(rss).read().split()[-1]) * 1024,
                  "steps": [float(r["tokens_per_s"]) for r in rows]}))
EOF
}
peft_run() { # NAME [extra peft_train options...]
  local name="$1"
  shift
  "$py" "$here/peft_train.py" --model "$hf" --seq-len "$seq_len" --batch 1 --steps "$steps" \
    --rank "$rank" --targets "$targets" --threads "$threads" --out "$work/$name.json" "$@" \
    2> "$work/$name.log" || { cat "$work/$name.log" >&2; exit 1; }
  python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); d["run"] = sys.argv[2]; d["trainer"] = d["peer"]; print(json.dumps(d))' \
    "$work/$name.json" "$name" >> "$runs"
}
plan() { # NAME MODEL MODE [extra plan options...]
  local name="$1" base="$2" mode="$3"
  shift 3
  "$forja" plan "$base" --here --mode "$mode" --seq-len "$seq_len" --micro-batch 1 \
    --lora-rank "$rank" --lora-targets all "$@" --json > "$work/plan-$name.json"
}

if [ "$peers" != 0 ]; then
  echo "== forja tune, LoRA on the f32 HF folder"
  forja_run lora-f32 "$hf"
  forja_run lora-f32-ckpt "$hf" --gradient-checkpointing
fi
echo "== forja tune, QLoRA on the GGUF"
forja_run qlora "$model"
forja_run qlora-ckpt "$model" --gradient-checkpointing
if [ "$peers" != 0 ]; then
  echo "== PEFT + transformers, LoRA on the f32 HF folder"
  peft_run peft-lora-f32
  peft_run peft-lora-f32-ckpt --gradient-checkpointing
  echo "== forja tune --full (f32)"
  forja_run full-f32 "$hf" --full
  forja_run full-f32-ckpt "$hf" --full --gradient-checkpointing
  echo "== transformers, full fine-tuning (f32)"
  peft_run tf-full-f32 --full
  peft_run tf-full-f32-ckpt --full --gradient-checkpointing
fi
echo "== forja plan"
if [ "$peers" != 0 ]; then
  plan lora-f32 "$hf" lora --quant f32
  plan lora-f32-ckpt "$hf" lora --quant f32 --gradient-checkpointing
  plan full-f32 "$hf" full-finetune --quant f32
  plan full-f32-ckpt "$hf" full-finetune --quant f32 --gradient-checkpointing
fi
plan qlora "$model" qlora
plan qlora-ckpt "$model" qlora --gradient-checkpointing
for s in $sweep; do
  echo "== forja tune and plan, QLoRA at $s tokens"
  seq_len=$s forja_run "qlora-$s" "$model"
  seq_len=$s forja_run "qlora-$s-ckpt" "$model" --gradient-checkpointing
  seq_len=$s plan "qlora-$s" "$model" qlora
  seq_len=$s plan "qlora-$s-ckpt" "$model" qlora --gradient-checkpointing
done

python3 - "$runs" "$work" "$results" "$seq_len" "$steps" "$threads" "$rank" "$model" "$("$forja" --version)" "$sweep" "$peers" "$records" <<'EOF'
import datetime, json, os, platform, sys
runs_path, work, results, seq, steps, threads, rank, model, version, sweep, peers, records = sys.argv[1:13]
runs = {r["run"]: r for r in map(json.loads, open(runs_path))}
def plan(name):
    p = os.path.join(work, f"plan-{name}.json")
    return json.load(open(p))["memory"]["total_bytes"] if os.path.exists(p) else None
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
            if l.startswith("model name")), "?")
gib = lambda b: f"{b / 2**30:.2f}"
date = datetime.date.today().isoformat()
folder = ("dequantized to an f32 HF folder by transformers for the LoRA and full fine-tuning rows"
          if peers != "0" else "QLoRA rows only: run with PEERS=0")
title = "forja tune vs HF PEFT and transformers" if peers != "0" else "forja tune's QLoRA runs"
out = [f"# Fine-tuning on the CPU: {title} ({date})", "",
       f"Machine: {cpu}, {os.cpu_count()} cores, {threads} threads each. Model: "
       f"`{os.path.basename(model)}` ({folder}). "
       f"{version}. Sequences of {seq} tokens, batch 1, no accumulation, LoRA rank {rank} "
       f"on q,k,v,o,gate,up,down, dropout 0.05, AdamW; {steps} steps, the first left out of "
       f"the speed; {records} records. Produced by `bench/tune/peft-compare.sh`.", "",
       "| run | trainer | tokens/s | peak RSS GiB | forja plan GiB | plan / measured |",
       "|---|---|---|---|---|---|"]
rows = [("lora-f32", "LoRA, f32 base"), ("peft-lora-f32", "LoRA, f32 base"),
        ("lora-f32-ckpt", "LoRA, f32 base, gradient checkpointing"),
        ("peft-lora-f32-ckpt", "LoRA, f32 base, gradient checkpointing"),
        ("qlora", "QLoRA, GGUF base"), ("qlora-ckpt", "QLoRA, GGUF base, gradient checkpointing"),
        ("full-f32", "full fine-tuning, f32"), ("tf-full-f32", "full fine-tuning, f32"),
        ("full-f32-ckpt", "full fine-tuning, f32, gradient checkpointing"),
        ("tf-full-f32-ckpt", "full fine-tuning, f32, gradient checkpointing")]
for s in sweep.split():
    rows += [(f"qlora-{s}", f"QLoRA, GGUF base, {s} tokens"),
             (f"qlora-{s}-ckpt", f"QLoRA, GGUF base, {s} tokens, gradient checkpointing")]
plans = {r: r for r, _ in rows if not r.startswith(("peft", "tf-"))}
for name, what in rows:
    r = runs.get(name)
    if not r:
        continue
    p = plan(plans[name]) if name in plans else None
    ratio = f"{p / r['peak_rss_bytes']:.2f}" if p else ""
    out.append(f"| {what} | {r['trainer']} | {r['tokens_per_s']:.1f} | {gib(r['peak_rss_bytes'])} "
               f"| {gib(p) if p else ''} | {ratio} |")
for name in ("peft-lora-f32", "peft-lora-f32-ckpt", "tf-full-f32", "tf-full-f32-ckpt"):
    r = runs.get(name)
    if r:
        out.append("")
        out.append(f"{name}: the Python process held {gib(r['rss_start_bytes'])} GiB before loading "
                   f"the model (interpreter, PyTorch) and {gib(r['rss_loaded_bytes'])} GiB after.")
path = os.path.join(results, f"{date}-tune-vs-peft" if peers != "0" else f"{date}-tune-qlora")
json.dump({"runs": runs, "plans": {k: plan(k) for k in plans}}, open(path + ".json", "w"), indent=1)
open(path + ".md", "w").write("\n".join(out) + "\n")
print("\n".join(out))
EOF
