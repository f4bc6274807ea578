//! Bad input gives an error that names the problem; nothing panics.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

use std::io::Cursor;

use forja_arch::{ArchError, GgufHeader, ModelDescription};
use forja_testkit::gguf_builder::{GgufBuilder, Meta};

fn read(bytes: &[u8]) -> Result<GgufHeader, ArchError> {
    GgufHeader::read(Cursor::new(bytes), bytes.len() as u64)
}

fn err_text(bytes: &[u8]) -> String {
    read(bytes).unwrap_err().to_string()
}

#[test]
fn tiny_llama_round_trips() {
    let bytes = GgufBuilder::tiny_llama().bytes();
    let h = read(&bytes).unwrap();
    assert_eq!(h.architecture(), Some("llama"));
    assert_eq!(h.tensors.len(), 2 + 9 * 2 + 1);
    let cfg = forja_arch::gguf_config::from_gguf(&h).unwrap();
    assert_eq!(
        (
            cfg.hidden_size,
            cfg.num_layers,
            cfg.num_heads,
            cfg.num_kv_heads
        ),
        (64, 2, 4, 2)
    );
    assert_eq!(cfg.vocab_size, 256);
    assert!(!cfg.tie_word_embeddings);
}

#[test]
fn bad_magic() {
    assert!(err_text(b"GGML\x03\0\0\0").contains("not a GGUF file"));
}

#[test]
fn unsupported_versions() {
    let mut b = GgufBuilder::tiny_llama();
    b.version = 1;
    assert!(err_text(&b.bytes()).contains("version 1 is not supported"));
    b.version = 3u32.swap_bytes();
    assert!(err_text(&b.bytes()).contains("big-endian"));
    b.version = 77;
    assert!(err_text(&b.bytes()).contains("unknown GGUF version 77"));
}

#[test]
fn every_truncation_is_an_error() {
    let bytes = GgufBuilder::tiny_llama().bytes();
    let header_len = GgufBuilder::tiny_llama().header_bytes().len();
    // Cutting anywhere in the header or the data must fail cleanly.
    for cut in (0..header_len)
        .step_by(7)
        .chain([header_len + 1, bytes.len() - 1])
    {
        let e = read(&bytes[..cut]);
        assert!(
            e.is_err(),
            "truncated at {cut} of {} was accepted",
            bytes.len()
        );
    }
}

#[test]
fn absurd_counts_are_rejected_before_allocating() {
    let mut bytes = b"GGUF".to_vec();
    bytes.extend_from_slice(&3u32.to_le_bytes());
    bytes.extend_from_slice(&u64::MAX.to_le_bytes());
    bytes.extend_from_slice(&u64::MAX.to_le_bytes());
    assert!(err_text(&bytes).contains("more than the file can hold"));
}

#[test]
fn huge_string_length_is_rejected() {
    let mut bytes = b"GGUF".to_vec();
    bytes.extend_from_slice(&3u32.to_le_bytes());
    bytes.extend_from_slice(&0u64.to_le_bytes());
    bytes.extend_from_slice(&1u64.to_le_bytes());
    bytes.extend_from_slice(&(1u64 << 62).to_le_bytes());
    bytes.extend_from_slice(&[0u8; 64]);
    assert!(err_text(&bytes).contains("does not fit"));
}

#[test]
fn unknown_tensor_type_names_the_tensor() {
    let b = GgufBuilder::new()
        .meta("general.architecture", Meta::Str("llama".into()))
        .tensor("w", &[32], 99, 32);
    let e = err_text(&b.bytes());
    assert!(
        e.contains("\"w\"") && e.contains("unknown ggml type id 99"),
        "{e}"
    );
}

#[test]
fn tensor_past_end_of_file_is_truncation() {
    let b = GgufBuilder::new().tensor("w", &[32, 4], 0, 512);
    let mut bytes = b.bytes();
    bytes.truncate(bytes.len() - 100);
    let e = err_text(&bytes);
    assert!(e.contains("truncated"), "{e}");
}

#[test]
fn overlapping_and_misaligned_tensors() {
    let mut b = GgufBuilder::new()
        .tensor("a", &[32], 0, 128)
        .tensor("b", &[32], 0, 128);
    b.alignment = 32;
    let mut bytes = b.header_bytes();
    // Rewrite b's offset (last 8 bytes before padding) to overlap a: rebuild by hand instead.
    let h = read(&b.bytes()).unwrap();
    assert_eq!(h.tensors[1].offset, 128);
    let pos = bytes
        .windows(8)
        .rposition(|w| w == 128u64.to_le_bytes())
        .unwrap();
    bytes[pos..pos + 8].copy_from_slice(&64u64.to_le_bytes());
    bytes.resize(bytes.len() + 256, 0);
    assert!(err_text(&bytes).contains("overlaps"));
    bytes[pos..pos + 8].copy_from_slice(&3u64.to_le_bytes());
    assert!(err_text(&bytes).contains("not aligned"));
}

#[test]
fn row_not_multiple_of_block() {
    // Q4_0 (id 2) needs rows that are a multiple of 32.
    let b = GgufBuilder::new().tensor("w", &[33, 1], 2, 18);
    assert!(err_text(&b.bytes()).contains("not a multiple of the q4_0 block size 32"));
}

#[test]
fn duplicate_keys_and_tensors() {
    let b = GgufBuilder::new()
        .meta("k", Meta::U32(1))
        .meta("k", Meta::U32(2));
    assert!(err_text(&b.bytes()).contains("duplicate metadata key"));
    let b = GgufBuilder::new()
        .tensor("w", &[32], 0, 128)
        .tensor("w", &[32], 0, 128);
    assert!(err_text(&b.bytes()).contains("duplicate tensor name"));
}

#[test]
fn missing_architecture_fields_are_named() {
    let b = GgufBuilder::new()
        .meta("general.architecture", Meta::Str("llama".into()))
        .tensor("w", &[32], 0, 128);
    let h = read(&b.bytes()).unwrap();
    let e = forja_arch::gguf_config::from_gguf(&h)
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing llama.embedding_length"), "{e}");
    let b = GgufBuilder::new().meta("general.architecture", Meta::Str("rwkv7".into()));
    let h = read(&b.bytes()).unwrap();
    let e = forja_arch::gguf_config::from_gguf(&h)
        .unwrap_err()
        .to_string();
    assert!(e.contains("unsupported architecture \"rwkv7\""), "{e}");
}

#[test]
fn gguf_errors_from_files_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("broken.gguf");
    std::fs::write(&p, b"GGUF\x03\0\0\0").unwrap();
    let e = ModelDescription::from_path(&p).unwrap_err().to_string();
    assert!(e.contains("broken.gguf") && e.contains("truncated"), "{e}");
    std::fs::write(&p, b"not a model at all").unwrap();
    let e = ModelDescription::from_path(&p).unwrap_err().to_string();
    assert!(e.contains("not a GGUF file"), "{e}");
}

#[test]
fn config_json_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("config.json");
    let cases: &[(&str, &str)] = &[
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        (
            r#"{"model_type": "bert", "hidden_size": 8}"#,
            "unsupported architecture \"bert\"",
        ),
        (
            r#"{"model_type": "llama", "num_hidden_layers": 2}"#,
            "missing hidden_size",
        ),
        (
            r#"{"model_type": "llama", "hidden_size": -4, "num_hidden_layers": 2, "num_attention_heads": 2, "vocab_size": 10}"#,
            "hidden_size must be a non-negative integer",
        ),
        (
            r#"{"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 6, "num_key_value_heads": 4, "vocab_size": 10}"#,
            "not a multiple of num_key_value_heads",
        ),
        (
            r#"{"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 0, "vocab_size": 10}"#,
            "num_attention_heads must be positive",
        ),
        (
            r#"{"model_type": "llama", "hidden_size": 99999999999, "num_hidden_layers": 2, "num_attention_heads": 1, "vocab_size": 10}"#,
            "implausibly large",
        ),
        (
            r#"{"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "vocab_size": 10,
                "vision_config": {"hidden_size": 32, "num_hidden_layers": 18446744073709551615, "num_global_layers": 8}}"#,
            "implausibly many",
        ),
    ];
    for (text, expected) in cases {
        std::fs::write(&p, text).unwrap();
        let e = ModelDescription::from_path(&p).unwrap_err().to_string();
        assert!(e.contains(expected), "{text}: {e}");
        assert!(
            e.contains("config.json"),
            "error does not name the file: {e}"
        );
    }
}

#[test]
fn safetensors_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        r#"{"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 10}"#,
    )
    .unwrap();
    let st = dir.path().join("model.safetensors");
    let header = br#"{"w": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 64]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    bytes.extend_from_slice(&[0u8; 64]);
    std::fs::write(&st, &bytes).unwrap();
    let m = ModelDescription::from_path(dir.path()).unwrap();
    assert_eq!(m.stored.unwrap().tensor_bytes, 64);
    std::fs::write(&st, &bytes[..bytes.len() - 1]).unwrap();
    let e = ModelDescription::from_path(dir.path())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("model.safetensors") && e.contains("truncated"),
        "{e}"
    );
    std::fs::write(&st, 1u64.to_le_bytes()).unwrap();
    let e = ModelDescription::from_path(dir.path())
        .unwrap_err()
        .to_string();
    assert!(e.contains("does not fit"), "{e}");
}

#[test]
fn hostile_moe_metadata_is_rejected_not_allocated() {
    let b = GgufBuilder::tiny_llama()
        .meta("llama.expert_count", Meta::U32(1))
        .meta("llama.expert_used_count", Meta::U32(1))
        .meta("llama.leading_dense_block_count", Meta::U64(1 << 40));
    let h = read(&b.bytes()).unwrap();
    let e = forja_arch::gguf_config::from_gguf(&h)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("leading_dense_block_count") && e.contains("exceeds block_count"),
        "{e}"
    );
    let b = GgufBuilder::tiny_llama()
        .meta("llama.expert_count", Meta::U32(2))
        .meta("llama.expert_used_count", Meta::U32(1))
        .meta("llama.expert_shared_count", Meta::U64(u64::MAX / 2))
        .meta("llama.expert_feed_forward_length", Meta::U64(16));
    let h = read(&b.bytes()).unwrap();
    let e = forja_arch::gguf_config::from_gguf(&h)
        .unwrap_err()
        .to_string();
    assert!(e.contains("overflows"), "{e}");
}

fn safetensors_file(path: &std::path::Path, elems: u64) {
    let header = format!(
        r#"{{"w": {{"dtype": "F32", "shape": [{elems}], "data_offsets": [0, {}]}}}}"#,
        elems * 4
    );
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.resize(bytes.len() + elems as usize * 4, 0);
    std::fs::write(path, bytes).unwrap();
}

/// Regression: Mistral repos ship `consolidated.safetensors` beside the HF shards; counting both
/// doubled the model.
#[test]
fn shards_come_from_the_index_and_duplicates_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        r#"{"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 10}"#,
    )
    .unwrap();
    safetensors_file(&dir.path().join("model-00001-of-00002.safetensors"), 16);
    safetensors_file(&dir.path().join("model-00002-of-00002.safetensors"), 8);
    safetensors_file(&dir.path().join("consolidated.safetensors"), 24);
    let m = ModelDescription::from_path(dir.path()).unwrap();
    assert_eq!(m.stored.as_ref().unwrap().tensor_bytes, 24 * 4);
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        r#"{"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}"#,
    )
    .unwrap();
    let m = ModelDescription::from_path(dir.path()).unwrap();
    assert_eq!(m.stored.as_ref().unwrap().files.len(), 2);
    assert_eq!(m.stored.as_ref().unwrap().tensor_bytes, 24 * 4);
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        r#"{"weight_map": {"a": "../escape.safetensors"}}"#,
    )
    .unwrap();
    let e = ModelDescription::from_path(dir.path())
        .unwrap_err()
        .to_string();
    assert!(e.contains("names a missing shard"), "{e}");
}
