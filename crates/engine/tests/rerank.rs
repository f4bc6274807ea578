//! The cross-encoder reranker end to end ((query, passage) → tokenizer → encoder → pooler →
//! classifier): a tiny random `BertForSequenceClassification` against the logits transformers
//! gives for the same pairs (fixtures/tiny/cross-encoder, from scripts/goldens/cross_encoder.py),
//! including a pair cut to the model's 64 positions.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

use std::path::PathBuf;

use forja_engine::{Reranker, is_encoder_dir, is_reranker_dir};
use serde_json::Value;

fn dir() -> PathBuf {
    forja_testkit::fixtures_dir()
        .join("tiny")
        .join("cross-encoder")
}

#[test]
fn scores_equal_transformers_logits() {
    let goldens: Value =
        serde_json::from_str(&std::fs::read_to_string(dir().join("goldens.json")).unwrap())
            .unwrap();
    let pairs = goldens["pairs"].as_array().unwrap();
    let r = Reranker::load_cpu(&dir()).unwrap();
    assert_eq!(r.max_tokens(), 64);
    assert_eq!(r.name(), "cross-encoder");
    // One call per query, its passages batched together (of different lengths: padding).
    let mut checked = 0;
    for query in [
        "which clause covers payment?",
        "termination notice",
        "a query",
    ] {
        let group: Vec<&Value> = pairs.iter().filter(|p| p["query"] == query).collect();
        let passages: Vec<&str> = group
            .iter()
            .map(|p| p["passage"].as_str().unwrap())
            .collect();
        let scores = r.score(query, &passages).unwrap();
        for (p, s) in group.iter().zip(&scores) {
            let want = p["logit"].as_f64().unwrap() as f32;
            assert!(
                (s - want).abs() <= 1e-5 * want.abs().max(1.0),
                "{query:?} / {:?}: {s} vs transformers' {want}",
                p["passage"]
            );
            checked += 1;
        }
    }
    assert_eq!(checked, pairs.len());
    // The longest pair was cut to the model's limit, not refused.
    assert!(
        pairs
            .iter()
            .any(|p| p["ids"].as_array().unwrap().len() == 64)
    );
    // Each pair alone scores as in a batch.
    let alone = r
        .score(
            "termination notice",
            &["The quick brown fox jumps over the lazy dog."],
        )
        .unwrap();
    let want = pairs[3]["logit"].as_f64().unwrap() as f32;
    assert!((alone[0] - want).abs() <= 1e-5, "{} vs {want}", alone[0]);
    assert!(r.score("x", &[]).unwrap().is_empty());
}

#[test]
fn rerankers_and_embedders_are_told_apart() {
    assert!(is_reranker_dir(&dir()));
    let bert = forja_testkit::fixtures_dir().join("tiny").join("bert");
    assert!(!is_reranker_dir(&bert));
    assert!(is_encoder_dir(&bert));
    // A plain encoder has no classifier: loading it as a reranker says what is missing.
    let e = Reranker::load_cpu(&bert).unwrap_err().to_string();
    assert!(e.contains("classifier.bias"), "{e}");
}
