//! Sentence embeddings end to end (text → tokenizer → encoder → pooling): the tiny random BERT
//! against transformers (fixtures/tiny/bert), and the real all-MiniLM-L6-v2 against the vectors
//! sentence-transformers' recipe gives with transformers (fixtures/goldens/minilm.json, from
//! scripts/goldens/encoders.py; the model from scripts/fetch-testdata).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;
use forja_engine::{Embedder, is_encoder_dir};
use forja_testkit::vectors::{cosine, floats, max_abs_diff, minilm_goldens};
use serde_json::Value;

fn tiny_dir() -> PathBuf {
    forja_testkit::fixtures_dir().join("tiny").join("bert")
}

/// The tiny model's single-text inputs and the golden vectors of `mode` for each.
fn tiny_goldens(mode: &str) -> Vec<(String, usize, Vec<f32>)> {
    let dir = tiny_dir();
    let meta: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("goldens.json")).unwrap()).unwrap();
    let tensors =
        candle_core::safetensors::load(dir.join("goldens.safetensors"), &Device::Cpu).unwrap();
    meta["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .filter(|(_, texts)| texts.as_array().unwrap().len() == 1)
        .map(|(i, texts)| {
            (
                texts[0].as_str().unwrap().to_string(),
                meta["ids"][i].as_array().unwrap().len(),
                tensors[&format!("{mode}.{i}")].to_vec1().unwrap(),
            )
        })
        .collect()
}

#[test]
fn embedders_can_be_shared_across_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<Embedder>();
}

#[test]
fn tiny_model_matches_the_reference_from_text() {
    let embedder = Embedder::load(&tiny_dir(), &Device::Cpu).unwrap();
    assert_eq!(embedder.dimension(), 32);
    let goldens = tiny_goldens("mean");
    let texts: Vec<&str> = goldens.iter().map(|(t, _, _)| t.as_str()).collect();
    let out = embedder.embed(&texts, false).unwrap();
    // The token counts are those of transformers' tokenizer, [CLS] and [SEP] included.
    assert_eq!(
        out.prompt_tokens,
        goldens.iter().map(|(_, n, _)| n).sum::<usize>()
    );
    for ((text, _, want), got) in goldens.iter().zip(&out.vectors) {
        let d = max_abs_diff(got, want);
        assert!(d <= 1e-5, "{text:?}: max |Δ| = {d:e}");
    }
}

#[test]
fn batch_size_and_input_order_do_not_change_vectors() {
    let goldens = tiny_goldens("mean");
    let mut texts: Vec<&str> = goldens.iter().map(|(t, _, _)| t.as_str()).collect();
    texts.extend(texts.clone().iter().rev());
    let whole = Embedder::load(&tiny_dir(), &Device::Cpu).unwrap();
    let one_by_one = Embedder::load(&tiny_dir(), &Device::Cpu)
        .unwrap()
        .with_max_batch_tokens(1);
    let a = whole.embed(&texts, false).unwrap();
    let b = one_by_one.embed(&texts, false).unwrap();
    assert_eq!(a.prompt_tokens, b.prompt_tokens);
    for (i, (x, y)) in a.vectors.iter().zip(&b.vectors).enumerate() {
        assert!(max_abs_diff(x, y) <= 1e-5, "input {i}");
    }
    let n = goldens.len();
    for i in 0..n {
        assert!(max_abs_diff(&a.vectors[i], &a.vectors[2 * n - 1 - i]) <= 1e-5);
    }
}

#[test]
fn requests_embedded_together_get_what_they_get_alone() {
    let embedder = Embedder::load(&tiny_dir(), &Device::Cpu).unwrap();
    let goldens = tiny_goldens("mean");
    let texts: Vec<&str> = goldens.iter().map(|(t, _, _)| t.as_str()).collect();
    let (first, second) = texts.split_at(2);
    let a = embedder.prepare(first, false).unwrap();
    let b = embedder.prepare(second, false).unwrap();
    assert_eq!((a.len(), b.len()), (2, texts.len() - 2));
    let together = embedder.embed_prepared(&[&a, &b]).unwrap();
    assert_eq!(together.len(), 2);
    for (request, alone) in together.iter().zip([first, second]) {
        let alone = embedder.embed(alone, false).unwrap();
        assert_eq!(request.prompt_tokens, alone.prompt_tokens);
        for (x, y) in request.vectors.iter().zip(&alone.vectors) {
            assert!(max_abs_diff(x, y) <= 1e-5);
        }
    }
    // A bad request fails in prepare, before any batch is formed.
    let long = "cat ".repeat(100);
    assert!(embedder.prepare(&[&long], false).is_err());
    assert!(embedder.embed_prepared(&[]).unwrap().is_empty());
}

/// A copy of the tiny model with sentence-transformers metadata `files` added.
fn tiny_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        std::fs::copy(tiny_dir().join(name), dir.path().join(name)).unwrap();
    }
    for (name, text) in files {
        let p = dir.path().join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    dir
}

#[test]
fn pooling_follows_the_sentence_transformers_modules() {
    let modules = r#"[
        {"path": "", "type": "sentence_transformers.models.Transformer"},
        {"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}
    ]"#;
    for (key, mode) in [
        ("pooling_mode_cls_token", "cls"),
        ("pooling_mode_max_tokens", "max"),
        ("pooling_mode_lasttoken", "lasttoken"),
    ] {
        let pooling = format!(r#"{{"word_embedding_dimension": 32, "{key}": true}}"#);
        let dir = tiny_with(&[
            ("modules.json", modules),
            ("1_Pooling/config.json", &pooling),
        ]);
        let embedder = Embedder::load(dir.path(), &Device::Cpu).unwrap();
        let goldens = tiny_goldens(mode);
        let texts: Vec<&str> = goldens.iter().map(|(t, _, _)| t.as_str()).collect();
        let out = embedder.embed(&texts, false).unwrap();
        for ((text, _, want), got) in goldens.iter().zip(&out.vectors) {
            let d = max_abs_diff(got, want);
            assert!(d <= 1e-5, "{mode} {text:?}: max |Δ| = {d:e}");
        }
    }
}

#[test]
fn long_inputs_are_refused_unless_truncation_is_asked_for() {
    let embedder = Embedder::load(&tiny_dir(), &Device::Cpu).unwrap();
    let max = embedder.max_tokens();
    assert_eq!(max, 64);
    // One token per word, [CLS] and [SEP] around them.
    let long = "cat ".repeat(100);
    let err = embedder.embed(&["the cat sat", &long], false).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("input 1") && msg.contains("102") && msg.contains("64"),
        "{msg}"
    );
    let fits = "cat ".repeat(max - 2);
    assert_eq!(embedder.embed(&[&fits], false).unwrap().prompt_tokens, max);
    // Truncation keeps [CLS], the first max - 2 words and the final [SEP]: the same input as
    // the text cut to those words.
    let cut = embedder.embed(&[&long], true).unwrap();
    assert_eq!(cut.prompt_tokens, max);
    let same = embedder.embed(&[&fits], false).unwrap();
    assert!(max_abs_diff(&cut.vectors[0], &same.vectors[0]) <= 1e-6);
}

#[test]
fn an_empty_input_list_is_an_error() {
    let embedder = Embedder::load(&tiny_dir(), &Device::Cpu).unwrap();
    assert!(embedder.embed(&[], false).is_err());
    // An empty text is still [CLS] [SEP].
    assert_eq!(embedder.embed(&[""], false).unwrap().prompt_tokens, 2);
}

#[test]
fn encoder_folders_are_told_from_chat_models() {
    assert!(is_encoder_dir(&tiny_dir()));
    let fixtures = forja_testkit::fixtures_dir().join("tiny");
    assert!(!is_encoder_dir(&fixtures.join("llama")));
    assert!(!is_encoder_dir(&fixtures.join("qwen3_moe")));
    assert!(!is_encoder_dir(Path::new("/nonexistent")));
}

#[test]
fn missing_tokenizer_is_named() {
    let dir = tiny_with(&[]);
    std::fs::remove_file(dir.path().join("tokenizer.json")).unwrap();
    let err = Embedder::load(dir.path(), &Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("tokenizer.json"), "{err}");
}

fn minilm() -> Embedder {
    let dir = forja_testkit::testdata_dir().join("all-minilm-l6-v2");
    assert!(
        dir.join("model.safetensors").is_file(),
        "test model {} is missing: run scripts/fetch-testdata",
        dir.display()
    );
    Embedder::load(&dir, &Device::Cpu).unwrap()
}

#[test]
fn minilm_matches_sentence_transformers() {
    let embedder = minilm();
    assert_eq!((embedder.dimension(), embedder.max_tokens()), (384, 256));
    let g = minilm_goldens();
    let sentences = g["sentences"].as_array().unwrap();
    let texts: Vec<&str> = sentences
        .iter()
        .map(|s| s["text"].as_str().unwrap())
        .collect();
    let out = embedder.embed(&texts, false).unwrap();
    let tokens: usize = sentences
        .iter()
        .map(|s| s["ids"].as_array().unwrap().len())
        .sum();
    assert_eq!(out.prompt_tokens, tokens);
    for (s, got) in sentences.iter().zip(&out.vectors) {
        let want = floats(&s["embedding"]);
        let c = cosine(got, &want);
        let d = max_abs_diff(got, &want);
        println!("{:?}: cosine {c:.7}, max |Δ| {d:.1e}", s["text"]);
        assert!(c >= 0.9999, "{:?}: cosine {c}", s["text"]);
        let norm: f32 = got.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "normalized: {norm}");
    }
}

#[test]
fn minilm_truncates_as_sentence_transformers_does() {
    let embedder = minilm();
    let g = &minilm_goldens()["long"];
    let text = g["text"].as_str().unwrap();
    let untruncated = g["untruncated_tokens"].as_u64().unwrap() as usize;
    assert!(untruncated > 256);
    let err = embedder.embed(&[text], false).unwrap_err().to_string();
    assert!(
        err.contains(&untruncated.to_string()) && err.contains("256"),
        "{err}"
    );
    let out = embedder.embed(&[text], true).unwrap();
    assert_eq!(
        out.prompt_tokens,
        g["truncated_ids"].as_array().unwrap().len()
    );
    let c = cosine(&out.vectors[0], &floats(&g["embedding"]));
    assert!(c >= 0.9999, "cosine {c}");
}

#[test]
fn minilm_puts_a_paraphrase_nearer_than_an_unrelated_sentence() {
    let embedder = minilm();
    let out = embedder
        .embed(
            &[
                "How can I cancel my contract early?",
                "What is the process for terminating my contract before it ends?",
                "The recipe needs two cups of flour and an egg.",
            ],
            false,
        )
        .unwrap();
    let v = &out.vectors;
    let (near, far) = (cosine(&v[0], &v[1]), cosine(&v[0], &v[2]));
    println!("paraphrase {near:.3}, unrelated {far:.3}");
    assert!(near > far + 0.4, "paraphrase {near}, unrelated {far}");
}

/// Prints the time to embed 32 sentences, best of three (not a benchmark: no assertion on
/// speed).
#[test]
fn minilm_embeds_a_batch_of_32() {
    let embedder = minilm();
    let g = minilm_goldens();
    let sentences: Vec<String> = g["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["text"].as_str().unwrap().to_string())
        .collect();
    let texts: Vec<String> = (0..32)
        .map(|i| format!("{} ({i})", sentences[i % sentences.len()]))
        .collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    embedder.embed(&refs[..2], false).unwrap();
    // Best of three: the machine may be busy with other work.
    let mut secs = f64::MAX;
    let mut out = None;
    for _ in 0..3 {
        let start = Instant::now();
        out = Some(embedder.embed(&refs, false).unwrap());
        secs = secs.min(start.elapsed().as_secs_f64());
    }
    let out = out.unwrap();
    assert_eq!(out.vectors.len(), 32);
    println!(
        "32 sentences, {} tokens: {:.1} ms ({:.0} sentences/s)",
        out.prompt_tokens,
        secs * 1e3,
        32.0 / secs
    );
}
