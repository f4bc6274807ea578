//! Replays the GGUF fuzzer's corpus and seeds (fuzz/corpus, fuzz/seeds) through the header reader and the
//! byte math: every input gives a value or an error, never a panic.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

use forja_arch::{GgufHeader, KvDtype, WeightFormat};

#[test]
fn corpus_inputs_never_panic() {
    let root = forja_testkit::repo_root().join("fuzz");
    let mut n = 0;
    let mut parsed = 0;
    let corpus = std::fs::read_dir(root.join("corpus/gguf_header")).unwrap();
    let seeds = std::fs::read_dir(root.join("seeds/gguf_header")).unwrap();
    for entry in corpus.chain(seeds) {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        n += 1;
        let cfg = GgufHeader::read(std::io::Cursor::new(&data), data.len() as u64)
            .ok()
            .and_then(|h| forja_arch::gguf_config::from_gguf(&h).ok().map(|c| (h, c)));
        if let Some((h, cfg)) = cfg {
            parsed += 1;
            let tensors = forja_arch::tensors::gguf_tensors(&h);
            let _ = forja_arch::weights::price_weights(&cfg, &tensors, WeightFormat::Bf16);
            let _ = forja_arch::kv_cache::kv_bytes(&cfg, 4096, 512, KvDtype::F16);
        }
    }
    assert!(n >= 4, "corpus has only {n} inputs");
    assert!(
        parsed >= 4,
        "the seed models must parse ({parsed} of {n} did)"
    );
}
