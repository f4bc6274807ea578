//! The BERT encoder against transformers (f32) on a tiny random BertModel: last hidden states of
//! a padded batch and the pooled, L2-normalized vectors of every pooling mode within 1e-5.
//! Goldens: fixtures/tiny/bert/goldens.* (scripts/goldens/encoders.py).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use common::max_abs_diff;
use forja_arch::Pooling;
use forja_models::{BertEncoder, EncoderInput};

const TOLERANCE: f32 = 1e-5;

struct Golden {
    ids: Vec<Vec<u32>>,
    type_ids: Vec<Vec<u32>>,
    tensors: HashMap<String, Tensor>,
}

impl Golden {
    fn inputs(&self) -> Vec<EncoderInput<'_>> {
        self.ids
            .iter()
            .zip(&self.type_ids)
            .map(|(ids, types)| EncoderInput {
                ids,
                type_ids: Some(types),
            })
            .collect()
    }
}

fn tiny_dir() -> PathBuf {
    forja_testkit::fixtures_dir().join("tiny").join("bert")
}

fn golden() -> Golden {
    let dir = tiny_dir();
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("goldens.json")).unwrap()).unwrap();
    let rows = |v: &serde_json::Value| -> Vec<Vec<u32>> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|t| t.as_u64().unwrap() as u32)
                    .collect()
            })
            .collect()
    };
    let tensors =
        candle_core::safetensors::load(dir.join("goldens.safetensors"), &Device::Cpu).unwrap();
    Golden {
        ids: rows(&meta["ids"]),
        type_ids: rows(&meta["type_ids"]),
        tensors,
    }
}

const MODES: [(&str, Pooling); 5] = [
    ("cls", Pooling::Cls),
    ("mean", Pooling::Mean),
    ("max", Pooling::Max),
    ("mean_sqrt_len", Pooling::MeanSqrtLen),
    ("lasttoken", Pooling::LastToken),
];

/// Largest difference of the pooled vectors from the goldens over every input and mode.
fn pooled_diff(model: &BertEncoder, g: &Golden) -> f32 {
    let mut worst = 0f32;
    for (name, mode) in MODES {
        let got = model.embed(&g.inputs(), mode, true).unwrap();
        for i in 0..g.ids.len() {
            let want = &g.tensors[&format!("{name}.{i}")];
            worst = worst.max(max_abs_diff(&got.get(i).unwrap(), want));
        }
    }
    worst
}

#[test]
fn hidden_states_of_a_padded_batch_match_the_reference() {
    let model = BertEncoder::load(&tiny_dir(), &Device::Cpu).unwrap();
    let g = golden();
    let lens: Vec<usize> = g.ids.iter().map(Vec::len).collect();
    assert!(
        lens.iter().min() < lens.iter().max(),
        "the goldens must exercise padding"
    );
    assert!(
        g.type_ids.iter().flatten().any(|&t| t == 1),
        "the goldens must exercise token types"
    );
    let hidden = model.forward(&g.inputs()).unwrap();
    for (i, &len) in lens.iter().enumerate() {
        let got = hidden.get(i).unwrap().narrow(0, 0, len).unwrap();
        let d = max_abs_diff(&got, &g.tensors[&format!("hidden.{i}")]);
        println!("input {i} ({len} tokens): max |Δ| = {d:.2e}");
        assert!(d <= TOLERANCE, "input {i}: max |Δ| = {d:e}");
    }
}

#[test]
fn pooled_vectors_of_every_mode_match_the_reference() {
    let model = BertEncoder::load(&tiny_dir(), &Device::Cpu).unwrap();
    let d = pooled_diff(&model, &golden());
    println!("pooled, every mode: max |Δ| = {d:.2e}");
    assert!(d <= TOLERANCE, "max |Δ| = {d:e}");
}

#[test]
fn a_batch_gives_each_sequence_what_it_gets_alone() {
    let model = BertEncoder::load(&tiny_dir(), &Device::Cpu).unwrap();
    let g = golden();
    let inputs = g.inputs();
    let batched = model.embed(&inputs, Pooling::Mean, true).unwrap();
    let hidden = model.forward(&inputs).unwrap();
    for (i, input) in inputs.iter().enumerate() {
        let alone = model.embed(&[*input], Pooling::Mean, true).unwrap();
        let d = max_abs_diff(&alone.get(0).unwrap(), &batched.get(i).unwrap());
        assert!(d <= TOLERANCE, "input {i}: pooled differs by {d:e}");
        let alone_hidden = model.forward(&[*input]).unwrap().get(0).unwrap();
        let n = input.ids.len();
        let d = max_abs_diff(
            &alone_hidden,
            &hidden.get(i).unwrap().narrow(0, 0, n).unwrap(),
        );
        assert!(d <= TOLERANCE, "input {i}: hidden states differ by {d:e}");
    }
}

#[test]
fn unnormalized_pooling_keeps_the_vector_length() {
    let model = BertEncoder::load(&tiny_dir(), &Device::Cpu).unwrap();
    let g = golden();
    let raw = model.embed(&g.inputs(), Pooling::Mean, false).unwrap();
    let norms: Vec<f32> = raw.sqr().unwrap().sum(1).unwrap().to_vec1().unwrap();
    assert!(
        norms.iter().all(|&n| (n.sqrt() - 1.0).abs() > 1e-3),
        "{norms:?}"
    );
    let unit = forja_models::pooling::l2_normalize(&raw).unwrap();
    let d = max_abs_diff(
        &unit,
        &model.embed(&g.inputs(), Pooling::Mean, true).unwrap(),
    );
    assert!(d <= 1e-6);
}

/// A copy of the tiny model whose tensors went through `edit` (name, tensor) → (name, tensor).
fn edited_copy(edit: impl Fn(&str, Tensor) -> Option<(String, Tensor)>) -> tempfile::TempDir {
    let src = tiny_dir();
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(src.join("config.json"), dir.path().join("config.json")).unwrap();
    let tensors = candle_core::safetensors::load(src.join("model.safetensors"), &Device::Cpu)
        .unwrap()
        .into_iter()
        .filter_map(|(name, t)| edit(&name, t))
        .collect::<HashMap<_, _>>();
    candle_core::safetensors::save(&tensors, dir.path().join("model.safetensors")).unwrap();
    dir
}

#[test]
fn task_checkpoints_with_the_bert_prefix_load() {
    let dir = edited_copy(|name, t| Some((format!("bert.{name}"), t)));
    let model = BertEncoder::load(dir.path(), &Device::Cpu).unwrap();
    let d = pooled_diff(&model, &golden());
    assert!(d <= TOLERANCE, "max |Δ| = {d:e}");
}

#[test]
fn half_precision_checkpoints_run_in_f32() {
    for (dtype, tolerance) in [(DType::F16, 1e-3), (DType::BF16, 1e-2)] {
        let dir = edited_copy(|name, t| Some((name.to_string(), t.to_dtype(dtype).unwrap())));
        let model = BertEncoder::load(dir.path(), &Device::Cpu).unwrap();
        let d = pooled_diff(&model, &golden());
        println!("{dtype:?}: max |Δ| = {d:.2e}");
        assert!(d <= tolerance, "{dtype:?}: max |Δ| = {d:e}");
    }
}

#[test]
fn a_missing_tensor_is_named_with_its_file() {
    let gone = "encoder.layer.2.intermediate.dense.bias";
    let dir = edited_copy(|name, t| (name != gone).then(|| (name.to_string(), t)));
    let err = BertEncoder::load(dir.path(), &Device::Cpu)
        .unwrap_err()
        .to_string();
    let file = dir.path().join("model.safetensors");
    assert!(
        err.contains(gone) && err.contains(&file.display().to_string()),
        "{err}"
    );

    std::fs::remove_file(&file).unwrap();
    let err = BertEncoder::load(dir.path(), &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("model.safetensors"), "{err}");
}

#[test]
fn a_wrongly_shaped_tensor_is_an_error() {
    let dir = edited_copy(|name, t| {
        let t = if name == "embeddings.position_embeddings.weight" {
            t.narrow(0, 0, 32).unwrap()
        } else {
            t
        };
        Some((name.to_string(), t))
    });
    let err = BertEncoder::load(dir.path(), &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("position_embeddings"), "{err}");
}

#[test]
fn other_model_types_are_refused_by_name() {
    let dir = edited_copy(|name, t| Some((name.to_string(), t)));
    let config = Path::new(dir.path()).join("config.json");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("\"bert\"", "\"xlm-roberta\"")).unwrap();
    let err = BertEncoder::load(dir.path(), &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("xlm-roberta") && err.contains("config.json"),
        "{err}"
    );
}

#[test]
fn bad_inputs_are_errors() {
    let model = BertEncoder::load(&tiny_dir(), &Device::Cpu).unwrap();
    let max = model.config().max_position_embeddings;
    let vocab = model.config().vocab_size as u32;
    let too_long = vec![5u32; max + 1];
    let longest = vec![5u32; max];
    assert!(model.forward(&[EncoderInput::single(&longest)]).is_ok());
    for bad in [
        vec![],
        vec![EncoderInput::single(&[])],
        vec![EncoderInput::single(&too_long)],
        vec![EncoderInput::single(&[2, vocab, 3])],
        vec![EncoderInput {
            ids: &[2, 5, 3],
            type_ids: Some(&[0, 0]),
        }],
        vec![EncoderInput {
            ids: &[2, 5, 3],
            type_ids: Some(&[0, 2, 0]),
        }],
    ] {
        assert!(model.forward(&bad).is_err(), "{bad:?}");
    }
}
