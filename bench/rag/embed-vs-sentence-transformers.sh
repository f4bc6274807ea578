#!/usr/bin/env bash
# Sentence-embedding speed on this CPU: `forja bench embed` beside sentence-transformers
# (PyTorch) on the same model folder and the same texts, the same number of threads and batch
# size, one after the other; also the cosine between the two implementations' vectors of every
# text. Texts come from the CUAD contracts (deterministic): short sentences and ~200-word
# passages (a chunk's size). Prints a markdown table; JSON reports stay in $OUT.
# Usage: bench/rag/embed-vs-sentence-transformers.sh
# Env: CUAD (default ../shared/data/cuad), MINILM (default ~/.cache/forja-testdata/all-minilm-l6-v2),
# BATCH (32), REPS (3), VENV (default ~/.cache/forja-bench-venv: torch 2.11.0 + sentence-transformers).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
data="${FORJA_TESTDATA:-$HOME/.cache/forja-testdata}"
cuad="${CUAD:-$root/../shared/data/cuad}"
minilm="${MINILM:-$data/all-minilm-l6-v2}"
batch="${BATCH:-32}"; reps="${REPS:-3}"
venv="${VENV:-$HOME/.cache/forja-bench-venv}"
out="${OUT:-$(mktemp -d)}"
mkdir -p "$out"
[ -d "$cuad/full_contract_txt" ] || { echo "no CUAD texts under $cuad (set CUAD)" >&2; exit 1; }
[ -f "$minilm/config.json" ] || { echo "no embedding model at $minilm: run scripts/fetch-testdata" >&2; exit 1; }
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet -r "$root/bench/rag/requirements.txt"
cargo build --release --locked --quiet -p forja-cli --manifest-path "$root/Cargo.toml"
forja="$root/target/release/forja"
threads="$(nproc)"

python3 - "$cuad/full_contract_txt" "$out" <<'EOF'
import os, re, sys
src, out = sys.argv[1], sys.argv[2]
words = []
sentences = []
for name in sorted(os.listdir(src)):
    text = open(os.path.join(src, name), encoding="utf-8", errors="replace").read()
    ws = text.split()
    words.extend(ws)
    for s in re.split(r"(?<=[.;:])\s+", " ".join(ws)):
        if 8 <= len(s.split()) <= 60:
            sentences.append(s)
step = max(1, len(sentences) // 2000)
with open(os.path.join(out, "sentences.txt"), "w") as f:
    f.write("\n".join(sentences[::step][:2000]) + "\n")
with open(os.path.join(out, "passages.txt"), "w") as f:
    f.write("\n".join(" ".join(words[i:i + 200]) for i in range(0, 500 * 4000, 4000)) + "\n")
EOF

for set in sentences passages; do
  OMP_NUM_THREADS="$threads" "$forja" bench embed --texts "$out/$set.txt" \
    --embedding-model "$minilm" --batch "$batch" -r "$reps" --json \
    --vectors "$out/forja-$set.jsonl" > "$out/forja-$set.json"
  "$venv/bin/python" - "$minilm" "$out/$set.txt" "$batch" "$reps" "$threads" \
    "$out/st-$set.json" "$out/forja-$set.jsonl" <<'EOF'
import json, sys, time
import numpy as np
import torch
from sentence_transformers import SentenceTransformer
model_dir, texts_path, batch, reps, threads, out, forja_vectors = sys.argv[1:]
torch.set_num_threads(int(threads))
texts = [l for l in open(texts_path).read().split("\n") if l.strip()]
model = SentenceTransformer(model_dir, device="cpu")
samples = []
vectors = None
for _ in range(int(reps)):
    t = time.perf_counter_ns()
    v = model.encode(texts, batch_size=int(batch), normalize_embeddings=False, convert_to_numpy=True)
    samples.append(time.perf_counter_ns() - t)
    vectors = v if vectors is None else vectors
rates = [len(texts) / (s / 1e9) for s in samples]
ours = np.array([json.loads(l) for l in open(forja_vectors)], dtype=np.float64)
theirs = vectors.astype(np.float64)
cos = (ours * theirs).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)
json.dump({"texts": len(texts), "avg_texts_per_s": sum(rates) / len(rates),
           "stddev_texts_per_s": float(np.std(rates)), "samples_ns": samples,
           "torch": torch.__version__, "threads": torch.get_num_threads(),
           "min_cosine_vs_forja": float(cos.min()), "mean_cosine_vs_forja": float(cos.mean())},
          open(out, "w"), indent=1)
EOF
done

python3 - "$out" "$threads" "$batch" <<'EOF'
import json, sys
out, threads, batch = sys.argv[1], sys.argv[2], sys.argv[3]
print(f"| texts | n | tokens | forja texts/s | sentence-transformers texts/s | forja / ST | min cosine |")
print("|---|---|---|---|---|---|---|")
for s in ("sentences", "passages"):
    f = json.load(open(f"{out}/forja-{s}.json"))
    t = json.load(open(f"{out}/st-{s}.json"))
    print(f"| {s} | {f['texts']} | {f['tokens']} | {f['avg_texts_per_s']:.1f} ± {f['stddev_texts_per_s']:.1f} "
          f"| {t['avg_texts_per_s']:.1f} ± {t['stddev_texts_per_s']:.1f} "
          f"| {f['avg_texts_per_s'] / t['avg_texts_per_s']:.2f} | {t['min_cosine_vs_forja']:.6f} |")
print(f"\n{threads} threads, batch {batch}; torch {t['torch']}; reports in {out}")
EOF
