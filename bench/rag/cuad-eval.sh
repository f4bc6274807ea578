#!/usr/bin/env bash
# Retrieval quality and answer accuracy of forja's RAG on the CUAD contracts (60 PDFs): ingests
# them with `forja ingest` (timed: files, pages and chunks per second), serves the collection
# with `forja serve`, and runs bench/rag/cuad_eval.py against the HTTP API (how the question set
# is built is written at the top of that script). Writes $OUT/cuad-eval.json and the ingest
# figures to $OUT/ingest.json (default OUT: a temporary folder, printed at the end).
# Usage: bench/rag/cuad-eval.sh [CHAT_MODEL.gguf]
# Env: CUAD (default ../shared/data/cuad beside the repository), MINILM (the embedding model,
# default ~/.cache/forja-testdata/all-minilm-l6-v2), ANSWERS (Governing Law questions asked of
# the chat model, default 60; 0 = retrieval only), PORT (8431), FORJA_PDFIUM (libpdfium),
# FORJA_BIN (a forja binary to use instead of building one).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
data="${FORJA_TESTDATA:-$HOME/.cache/forja-testdata}"
model="${1:-$data/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf}"
cuad="${CUAD:-$root/../shared/data/cuad}"
minilm="${MINILM:-$data/all-minilm-l6-v2}"
answers="${ANSWERS:-60}"
port="${PORT:-8431}"
out="${OUT:-$(mktemp -d)}"
mkdir -p "$out"
[ -d "$cuad/full_contract_pdf" ] || { echo "no CUAD PDFs under $cuad (set CUAD)" >&2; exit 1; }
[ -f "$minilm/config.json" ] || { echo "no embedding model at $minilm: run scripts/fetch-testdata" >&2; exit 1; }
export FORJA_PDFIUM="${FORJA_PDFIUM:-$data/pdfium/libpdfium.so}"
[ -f "$FORJA_PDFIUM" ] || { echo "no libpdfium at $FORJA_PDFIUM: run scripts/fetch-testdata" >&2; exit 1; }
if [ -n "${FORJA_BIN:-}" ]; then
  forja="$FORJA_BIN"
else
  cargo build --release --locked --quiet -p forja-cli --manifest-path "$root/Cargo.toml"
  forja="$root/target/release/forja"
fi
work="$(mktemp -d)"
export FORJA_HOME="$work/home"
store="$work/rag.sqlite"
pid=""
stop() {
  if [ -n "$pid" ]; then
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap stop EXIT

start=$(date +%s.%N)
"$forja" ingest "$cuad/full_contract_pdf" -c cuad --store "$store" --embedding-model "$minilm" \
  2> "$out/ingest.log"
end=$(date +%s.%N)
python3 - "$store" "$start" "$end" "$out/ingest.json" <<'EOF'
import json, sqlite3, sys
store, start, end, out = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
db = sqlite3.connect(store)
docs = db.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
pages = db.execute(
    "SELECT COALESCE(SUM(p), 0) FROM (SELECT MAX(page) AS p FROM chunks GROUP BY document_id)"
).fetchone()[0]
chunks, tokens = db.execute("SELECT COUNT(*), SUM(tokens) FROM chunks").fetchone()
s = end - start
r = {"seconds": round(s, 2), "documents": docs, "pages": pages, "chunks": chunks,
     "tokens": tokens, "pages_per_s": round(pages / s, 2), "chunks_per_s": round(chunks / s, 2)}
print("ingest:", r)
json.dump(r, open(out, "w"), indent=1)
# Every chunk with its file, for the evaluation's count of questions the store can answer.
chunks = db.execute(
    "SELECT d.path, c.text FROM chunks c JOIN documents d ON d.id = c.document_id"
).fetchall()
json.dump([{"path": p, "text": t} for p, t in chunks],
          open(out.replace("ingest.json", "chunks.json"), "w"))
EOF

"$forja" serve "$model" --port "$port" --rag-store "$store" --embedding-model "$minilm" \
  > "$out/serve.log" 2>&1 &
pid=$!
for _ in $(seq 1 600); do
  curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
  sleep 0.2
done
name="$(curl -fsS "http://127.0.0.1:$port/v1/models" | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"][0]["id"])')"
python3 "$root/bench/rag/cuad_eval.py" "http://127.0.0.1:$port" cuad "$cuad" "$out/cuad-eval.json" \
  --answers "$answers" --model "$name" --chunks "$out/chunks.json"
echo "results in $out"
