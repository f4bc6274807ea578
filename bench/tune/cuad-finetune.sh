#!/usr/bin/env bash
# End-to-end LoRA fine-tuning on CUAD contract clauses: builds the clause -> category + answer
# dataset (bench/tune/cuad_dataset.py, split by contract), measures the base model's accuracy on
# the held-out contracts through `forja serve` (bench/tune/cuad_accuracy.py), trains an adapter
# with `forja tune` (which prints its eval loss on the held-out contracts before and after), serves base + adapter and
# measures accuracy again, then writes a markdown summary, both accuracy JSON files and the loss
# curve to RESULTS_DIR as DATE-tune-cuad.md, DATE-tune-cuad-{base,tuned}.json and
# DATE-tune-cuad-loss.csv.
#
# Usage: bench/tune/cuad-finetune.sh [RESULTS_DIR]        (default: bench/results)
# Env (defaults sized for ~10 minutes on 2 CPU cores, training at ~150 tokens/s):
#   MODEL        base model (default ~/.cache/forja-testdata/SmolLM2-135M-Instruct.Q4_1.gguf)
#   FORJA_BIN    forja binary (default target/release/forja)
#   CUAD         folder holding master_clauses.csv (default ../shared/data/cuad beside the repo)
#   WORK         folder for the dataset, adapter and logs (default: a new temporary folder,
#                kept and printed at the end); an adapter already in WORK/adapter is replaced
#   SEED (0), MAX_TRAIN (300), MAX_EVAL (80), MAX_CHARS (1200)      dataset
#   STEPS (65), GRAD_ACCUM (4), LR (5e-4), RANK (16), ALPHA (32), MAX_LEN (512)  forja tune
#   MAX_TOKENS (40), CONCURRENCY (4)                                 accuracy requests
#   PORT         port for forja serve (default: a free one)
# With the defaults training sees 65 x 4 = 260 sequences of ~236 tokens with SmolLM2's chat
# template (~61k tokens, about 7 minutes at 150 tokens/s); the two accuracy passes and forja
# tune's evaluations take a few minutes together.
#
# Eval loss and accuracy are both measured on the held-out contracts' records (`forja tune
# --eval-data`).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
here="$root/bench/tune"
testdata="${FORJA_TESTDATA:-$HOME/.cache/forja-testdata}"
model="${MODEL:-$testdata/SmolLM2-135M-Instruct.Q4_1.gguf}"
forja="${FORJA_BIN:-$root/target/release/forja}"
cuad="${CUAD:-$root/../shared/data/cuad}"
results="${1:-$root/bench/results}"
seed="${SEED:-0}"
max_train="${MAX_TRAIN:-300}"
max_eval="${MAX_EVAL:-80}"
max_chars="${MAX_CHARS:-1200}"
steps="${STEPS:-65}"
grad_accum="${GRAD_ACCUM:-4}"
lr="${LR:-5e-4}"
rank="${RANK:-16}"
alpha="${ALPHA:-32}"
max_len="${MAX_LEN:-512}"
max_tokens="${MAX_TOKENS:-40}"
concurrency="${CONCURRENCY:-4}"
adapter_name=cuad

[ -x "$forja" ] || { echo "no forja binary at $forja: build it (cargo build --release -p forja-cli) or set FORJA_BIN" >&2; exit 1; }
[ -f "$model" ] || { echo "no model at $model: run scripts/fetch-testdata or set MODEL" >&2; exit 1; }
[ -f "$cuad/master_clauses.csv" ] || { echo "no master_clauses.csv under $cuad (set CUAD)" >&2; exit 1; }
command -v curl >/dev/null || { echo "curl is needed" >&2; exit 1; }
port="${PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
url="http://127.0.0.1:$port"
work="${WORK:-$(mktemp -d)}"
mkdir -p "$work" "$results"
work="$(cd "$work" && pwd)"
# The model is given by path: a private home keeps the server off the user's store and RAG files.
export FORJA_HOME="$work/home"
prefix="$results/$(date +%F)-tune-cuad"

pid=""
stop() {
  if [ -n "$pid" ]; then
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  pid=""
}
trap stop EXIT

serve() { # LOG [forja serve options...]: starts the server, waits until it answers
  local log="$1"
  shift
  "$forja" serve "$model" --port "$port" "$@" >"$log" 2>&1 &
  pid=$!
  for _ in $(seq 1 1500); do
    if curl -fsS "$url/health" >/dev/null 2>&1; then
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "forja serve stopped; its log ($log):" >&2
      tail -n 20 "$log" >&2
      pid=""
      exit 1
    fi
    sleep 0.2
  done
  echo "forja serve did not answer on $url within 5 minutes" >&2
  exit 1
}

served_names() {
  curl -fsS "$url/v1/models" | python3 -c 'import json, sys; print("\n".join(m["id"] for m in json.load(sys.stdin)["data"]))'
}

echo "== dataset ($work/data)"
python3 "$here/cuad_dataset.py" --csv "$cuad/master_clauses.csv" --out "$work/data" \
  --seed "$seed" --max-train "$max_train" --max-eval "$max_eval" --max-chars "$max_chars" \
  | tee "$work/dataset.log"
python3 - "$work/data/stats.json" "$steps" "$grad_accum" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
# chars / 4, plus ~15 tokens of chat template a sequence
per = s["approx_tokens"]["train"] / max(1, s["records"]["train"]) + 15
tokens = per * int(sys.argv[2]) * int(sys.argv[3])
print(f"training will see ~{tokens:.0f} tokens (~{per:.0f} a sequence): ~{tokens / 150 / 60:.0f} "
      f"minutes at 150 tokens/s")
EOF

echo "== base model accuracy"
t0=$(date +%s)
serve "$work/serve-base.log"
base_name="$(served_names | head -n 1)"
python3 "$here/cuad_accuracy.py" "$url" "$base_name" "$work/data/eval.jsonl" \
  --out "$prefix-base.json" --max-tokens "$max_tokens" --concurrency "$concurrency" --label base
stop
t1=$(date +%s)

echo "== forja tune"
rm -rf "$work/adapter"
"$forja" tune --model "$model" --data "$work/data/train.jsonl" --out "$work/adapter" \
  --steps "$steps" --grad-accum "$grad_accum" --lr "$lr" --rank "$rank" --alpha "$alpha" \
  --max-len "$max_len" --eval-data "$work/data/eval.jsonl" --seed "$seed" 2>&1 \
  | tee "$work/tune.log"
cp "$work/adapter/loss.csv" "$prefix-loss.csv"
t2=$(date +%s)

echo "== base + adapter accuracy"
serve "$work/serve-tuned.log" --adapter "$adapter_name=$work/adapter"
tuned_name="$base_name+$adapter_name"
if ! served_names | grep -qxF "$tuned_name"; then
  echo "the server does not list $tuned_name:" >&2
  served_names >&2
  exit 1
fi
python3 "$here/cuad_accuracy.py" "$url" "$tuned_name" "$work/data/eval.jsonl" \
  --out "$prefix-tuned.json" --max-tokens "$max_tokens" --concurrency "$concurrency" --label tuned
stop
t3=$(date +%s)

MODEL="$model" MAX_CHARS="$max_chars" SEED="$seed" MAX_TOKENS="$max_tokens" \
TUNE_ARGS="--steps $steps --grad-accum $grad_accum --lr $lr --rank $rank --alpha $alpha --max-len $max_len --eval-data eval.jsonl --seed $seed" \
TIMES="$t0 $t1 $t2 $t3" python3 - "$prefix" "$work" <<'EOF'
import csv, json, os, platform, re, sys
prefix, work = sys.argv[1], sys.argv[2]
env = os.environ
t0, t1, t2, t3 = (int(x) for x in env["TIMES"].split())
base = json.load(open(prefix + "-base.json"))["summary"]
tuned = json.load(open(prefix + "-tuned.json"))
results, tuned = tuned["results"], tuned["summary"]
stats = json.load(open(os.path.join(work, "data", "stats.json")))
log = open(os.path.join(work, "tune.log")).read()
curve = list(csv.DictReader(open(prefix + "-loss.csv")))

def grab(pattern):
    m = re.search(pattern, log)
    return m.groups() if m else None

cpu = "?"
for line in open("/proc/cpuinfo"):
    if line.startswith("model name"):
        cpu = line.split(":", 1)[1].strip()
        break
split_line = grab(r"(\d+) train / (\d+) eval examples \((\d+) train tokens\)")
before = grab(r"eval before training: loss ([\d.]+), perplexity ([\d.]+)")
after = grab(r"eval after training: loss ([\d.]+) \(was [\d.]+\), perplexity ([\d.]+)")
last = curve[-1] if curve else {}
pct = lambda x: "n/a" if x is None else f"{100 * x:.1f} %"
out = []
w = out.append
w("# LoRA fine-tuning on CUAD contract clauses")
w("")
w(f"Machine: {cpu}, {os.cpu_count()} cores, {platform.system()}. Base model: "
  f"`{os.path.basename(env['MODEL'])}`. Produced by `bench/tune/cuad-finetune.sh`.")
w("")
w("## Task and data")
w("")
w(f"Clause text (CUAD v1 `master_clauses.csv` excerpts, at most {env['MAX_CHARS']} characters) -> "
  "two lines, `Category: <name>` and `Answer: <answer>` (the jurisdiction for Governing Law, "
  "the renewal period for Renewal Term, Yes for the 8 other categories); see "
  "`bench/tune/cuad_dataset.py` for the choices.")
w("")
w(f"Split by contract (seed {env['SEED']}): {stats['contracts']['train']} training contracts, "
  f"{stats['contracts']['eval']} held out. Records written: {stats['records']['train']} train, "
  f"{stats['records']['eval']} eval (held-out contracts only).")
w("")
w("| category | train | eval |")
w("|---|---|---|")
for c, n in stats["written"]["train"].items():
    w(f"| {c} | {n} | {stats['written']['eval'][c]} |")
w("")
w("## Training (`forja tune`)")
w("")
w(f"`forja tune {env['TUNE_ARGS']}`")
w("")
if split_line:
    w(f"- examples: {split_line[0]} train / {split_line[1]} eval ({split_line[2]} train tokens)")
if last:
    tokens = sum(int(r["tokens"]) for r in curve)
    secs = sum(int(r["tokens"]) / float(r["tokens_per_s"]) for r in curve if float(r["tokens_per_s"]))
    k = min(5, len(curve))
    mean = lambda rs: sum(float(r["loss"]) for r in rs) / len(rs)
    w(f"- {last['step']} steps, {tokens} tokens in {secs / 60:.1f} min of training "
      f"({tokens / secs:.1f} tokens/s; {float(last['elapsed_s']) / 60:.1f} min with the final "
      f"evaluation); training loss {mean(curve[:k]):.4f} over the first {k} steps, "
      f"{mean(curve[-k:]):.4f} over the last {k}")
if before and after:
    w(f"- eval loss on the held-out contracts' records {before[0]} -> {after[0]} "
      f"(perplexity {before[1]} -> {after[1]})")
w(f"- wall time: base accuracy {t1 - t0} s, forja tune {t2 - t1} s, tuned accuracy "
  f"{t3 - t2} s")
w("")
w("## Accuracy on the held-out contracts (`bench/tune/cuad_accuracy.py`)")
w("")
w(f"{base['all']['n']} records, temperature 0, max_tokens {env['MAX_TOKENS']}. Category: exact name "
  "(case and punctuation ignored). Answer exact: equal after lower-casing and dropping "
  "punctuation and articles; loose: also when one contains the other or token F1 >= 0.5, "
  "with the same numbers. Value categories: Governing Law and Renewal Term.")
w("")
w("| | format | category | answer exact | answer loose | both | value-category answer exact / loose |")
w("|---|---|---|---|---|---|---|")
for name, s in (("base", base), ("base + adapter", tuned)):
    a, v = s["all"], s["value_categories"]
    w(f"| {name} | {pct(a['format'])} | {pct(a['category'])} | {pct(a['answer_exact'])} | "
      f"{pct(a['answer_loose'])} | {pct(a['both'])} | {pct(v['answer_exact'])} / "
      f"{pct(v['answer_loose'])} |")
w("")
w("Per category (category accuracy / answer exact), base -> base + adapter:")
w("")
w("| category | n | category | answer exact |")
w("|---|---|---|---|")
for c, t in tuned["per_category"].items():
    b = base["per_category"].get(c, {})
    w(f"| {c} | {t['n']} | {pct(b.get('category'))} -> {pct(t['category'])} | "
      f"{pct(b.get('answer_exact'))} -> {pct(t['answer_exact'])} |")
w("")
wrong = [r for r in results if not r["both_ok"]][:5]
if wrong:
    w("Some replies of base + adapter that miss:")
    w("")
    for r in wrong:
        w(f"- expected `{r['expected']!r}`, got `{r['produced'][:160]!r}`")
    w("")
w(f"Every prompt and reply: `{os.path.basename(prefix)}-base.json`, "
  f"`{os.path.basename(prefix)}-tuned.json`; loss curve: `{os.path.basename(prefix)}-loss.csv`.")
open(prefix + ".md", "w").write("\n".join(out) + "\n")
print("\n".join(out))
EOF
echo "summary: $prefix.md; dataset, adapter and logs in $work"
