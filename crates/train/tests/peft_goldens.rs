#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]
//! forja's LoRA training and adapters against HF PEFT + transformers on the tiny random Llama
//! (goldens from scripts/goldens/lora.py): the same start, data and hyper-parameters give the
//! same per-step losses, and an adapter PEFT trained gives PEFT's logits in forja.

use std::path::PathBuf;

use candle_core::Device;
use forja_models::Decoder;
use forja_testkit::{fixtures_dir, vectors::max_abs_diff};
use forja_train::{Init, LoraSpec, attach, peft, train};
use serde_json::Value;

mod common;
use common::{config_from, examples_from};

fn golden_dir() -> PathBuf {
    fixtures_dir().join("goldens/lora")
}

fn golden() -> Value {
    let text = std::fs::read_to_string(golden_dir().join("train.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn tiny_llama() -> Decoder {
    forja_models::loader::load(&fixtures_dir().join("tiny/llama"), &Device::Cpu).unwrap()
}

fn logits_of(decoder: &Decoder, ids: &[u32]) -> Vec<f32> {
    let t = decoder.prompt_logits(ids).unwrap();
    t.flatten_all().unwrap().to_vec1().unwrap()
}

#[test]
fn twenty_lora_steps_give_peft_losses() {
    let g = golden();
    let init = peft::load(&golden_dir().join("init")).unwrap();
    let mut decoder = tiny_llama();
    let spec = LoraSpec {
        dropout: 0.0,
        ..init.spec.clone()
    };
    assert_eq!(spec.rank, g["hyper"]["rank"].as_u64().unwrap() as usize);
    let adapters = attach(&mut decoder, &spec, Init::From(&init), 0).unwrap();
    assert_eq!(adapters.modules.len(), 3 * 7);
    let cfg = config_from(&g, false);
    let reports = train(
        &mut decoder,
        adapters.vars(),
        &examples_from(&g),
        &[],
        &cfg,
        |_| Ok(()),
    )
    .unwrap();
    let want: Vec<f64> = g["losses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let got: Vec<f64> = reports.iter().map(|r| r.loss).collect();
    assert_eq!(got.len(), want.len());
    for (i, (a, b)) in got.iter().zip(&want).enumerate() {
        assert!(
            (a - b).abs() < 1e-3,
            "step {}: forja {a:.6}, PEFT {b:.6}\nforja {got:?}\nPEFT {want:?}",
            i + 1
        );
    }
    // The run learned something: the golden's loss falls by more than half.
    assert!(got[got.len() - 1] < got[0] * 0.5);

    // What forja writes is what PEFT wrote after the same training: the same tensor names,
    // shapes and dtype, values equal to training precision, and the same meaning in the config.
    // FORJA_LORA_GOLDEN_OUT keeps the adapter for `scripts/goldens/lora.py check`, which loads
    // it with PEFT.
    let tmp = tempfile::tempdir().unwrap();
    let dir = std::env::var_os("FORJA_LORA_GOLDEN_OUT")
        .map_or_else(|| tmp.path().to_path_buf(), PathBuf::from);
    peft::save(&mut decoder, &adapters.spec, "fixtures/tiny/llama", &dir).unwrap();
    let ours = candle_core::safetensors::load(dir.join(peft::WEIGHTS_FILE), &Device::Cpu).unwrap();
    let theirs = candle_core::safetensors::load(
        golden_dir().join("trained").join(peft::WEIGHTS_FILE),
        &Device::Cpu,
    )
    .unwrap();
    let mut names: Vec<&String> = ours.keys().collect();
    names.sort();
    let mut want_names: Vec<&String> = theirs.keys().collect();
    want_names.sort();
    assert_eq!(names, want_names);
    for name in names {
        let (a, b) = (&ours[name], &theirs[name]);
        assert_eq!((a.dims(), a.dtype()), (b.dims(), b.dtype()), "{name}");
        let diff = max_abs_diff(
            &a.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            &b.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        );
        assert!(diff < 1e-4, "{name} differs from PEFT's by {diff}");
    }
    let read = |p: PathBuf| -> Value {
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    };
    let ours = read(dir.join(peft::CONFIG_FILE));
    let theirs = read(golden_dir().join("trained").join(peft::CONFIG_FILE));
    for key in [
        "peft_type",
        "task_type",
        "r",
        "lora_alpha",
        "bias",
        "fan_in_fan_out",
        "use_rslora",
        "use_dora",
        "modules_to_save",
        "rank_pattern",
        "alpha_pattern",
        "layers_to_transform",
    ] {
        assert_eq!(ours[key], theirs[key], "{key}");
    }
    let set = |v: &Value| {
        let mut s: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().to_string())
            .collect();
        s.sort();
        s
    };
    assert_eq!(set(&ours["target_modules"]), set(&theirs["target_modules"]));
}

/// The golden probe's token ids and the logits PEFT's trained adapter gives it.
fn probe_and_peft_logits() -> (Vec<u32>, Vec<f32>) {
    let g = golden();
    let probe: Vec<u32> = g["probe"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let want = candle_core::safetensors::load(golden_dir().join("probe.safetensors"), &Device::Cpu)
        .unwrap();
    let want: Vec<f32> = want["logits"].flatten_all().unwrap().to_vec1().unwrap();
    (probe, want)
}

#[test]
fn adapter_trained_by_peft_gives_peft_logits() {
    let (probe, want) = probe_and_peft_logits();
    let mut decoder = tiny_llama();
    let base = logits_of(&decoder, &probe);
    let adapter = peft::load(&golden_dir().join("trained")).unwrap();
    assert_eq!(adapter.spec.alpha, 8.0);
    peft::apply(&mut decoder, &adapter).unwrap();
    let tuned = logits_of(&decoder, &probe);
    let diff = max_abs_diff(&tuned, &want);
    assert!(diff < 1e-4, "logits differ from PEFT's by {diff}");
    // The adapter matters: without it the logits are far from PEFT's.
    assert!(max_abs_diff(&base, &want) > 0.1);
}

#[test]
fn saved_adapter_loads_back_with_the_same_logits() {
    let g = golden();
    let probe: Vec<u32> = g["probe"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let mut decoder = tiny_llama();
    let adapter = peft::load(&golden_dir().join("trained")).unwrap();
    peft::apply(&mut decoder, &adapter).unwrap();
    let before = logits_of(&decoder, &probe);
    let dir = tempfile::tempdir().unwrap();
    peft::save(&mut decoder, &adapter.spec, "tiny/llama", dir.path()).unwrap();
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join(peft::CONFIG_FILE)).unwrap())
            .unwrap();
    assert_eq!(config["peft_type"], "LORA");
    assert_eq!(config["r"], 4);
    let keys =
        candle_core::safetensors::load(dir.path().join(peft::WEIGHTS_FILE), &Device::Cpu).unwrap();
    assert!(keys.contains_key("base_model.model.model.layers.2.mlp.down_proj.lora_B.weight"));
    assert_eq!(keys.len(), 2 * 3 * 7);
    let mut fresh = tiny_llama();
    let reloaded = peft::load(dir.path()).unwrap();
    peft::apply(&mut fresh, &reloaded).unwrap();
    assert_eq!(logits_of(&fresh, &probe), before);
}

#[test]
fn adapter_for_another_model_is_refused_whole() {
    let mut decoder = tiny_llama();
    let mut adapter = peft::load(&golden_dir().join("trained")).unwrap();
    let (a, b) = adapter.modules.values().next().cloned().unwrap();
    adapter
        .modules
        .insert("model.layers.9.self_attn.q_proj".into(), (a, b));
    let err = peft::apply(&mut decoder, &adapter).unwrap_err().to_string();
    assert!(err.contains("model.layers.9.self_attn.q_proj"), "{err}");
    // Nothing was attached.
    assert!(decoder.linears_mut().iter().all(|(_, l)| l.lora.is_none()));
}

#[test]
fn merged_model_gives_the_adapted_logits_without_the_adapter() {
    let (probe, want) = probe_and_peft_logits();
    let adapter = peft::load(&golden_dir().join("trained")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("merged");
    let report =
        forja_train::merge::merge_into_folder(&fixtures_dir().join("tiny/llama"), &adapter, &out)
            .unwrap();
    assert_eq!(report.merged, 3 * 7);
    let listing = |d: &std::path::Path| {
        let mut names: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    assert_eq!(listing(&out), listing(&fixtures_dir().join("tiny/llama")));
    let merged = forja_models::loader::load(&out, &Device::Cpu).unwrap();
    let diff = max_abs_diff(&logits_of(&merged, &probe), &want);
    assert!(diff < 1e-4, "merged logits differ from PEFT's by {diff}");
    // Merging again into the same folder is refused; nothing half-written is left beside it.
    let err =
        forja_train::merge::merge_into_folder(&fixtures_dir().join("tiny/llama"), &adapter, &out)
            .unwrap_err()
            .to_string();
    assert!(err.contains("already exists"), "{err}");
    assert!(!dir.path().join("merged.partial").exists());
}

#[test]
fn all_linear_adapts_every_projection_but_the_head_and_names_them() {
    let mut decoder = tiny_llama();
    let spec = LoraSpec {
        rank: 2,
        alpha: 4.0,
        dropout: 0.0,
        targets: vec!["all-linear".into()],
        use_rslora: false,
    };
    let adapters = attach(&mut decoder, &spec, Init::Random, 1).unwrap();
    let mut names = adapters.spec.targets.clone();
    names.sort();
    let mut expected = forja_models::lora::PEFT_TARGETS.map(String::from).to_vec();
    expected.sort();
    assert_eq!(
        names, expected,
        "the saved configuration names the projections"
    );
    for (path, linear) in decoder.linears_mut() {
        assert_eq!(linear.lora.is_some(), path != "lm_head", "{path}");
    }
    // `all` is the same selection.
    let mut other = tiny_llama();
    let all = LoraSpec {
        targets: vec!["all".into()],
        ..spec
    };
    assert_eq!(
        attach(&mut other, &all, Init::Random, 1)
            .unwrap()
            .modules
            .len(),
        adapters.modules.len()
    );
}
