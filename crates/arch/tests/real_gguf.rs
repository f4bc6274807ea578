//! forja's GGUF header reader against the reference reader (`gguf` package, goldens made by
//! scripts/goldens/gguf_headers.py) on the real test models.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

use forja_arch::quant_recipe::assign_types;
use forja_arch::{GgufHeader, ModelDescription, WeightFormat};
use forja_testkit::{REAL_GGUFS, fixtures_dir, testdata_file};

fn goldens() -> serde_json::Value {
    let text = std::fs::read_to_string(fixtures_dir().join("goldens/gguf_headers.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn header_matches_reference_reader() {
    let g = goldens();
    for name in REAL_GGUFS {
        let golden = &g[name];
        let h = GgufHeader::read_path(&testdata_file(name)).unwrap();
        assert_eq!(
            h.file_bytes,
            golden["file_bytes"].as_u64().unwrap(),
            "{name}: file size"
        );
        assert_eq!(
            h.tensors.len() as u64,
            golden["n_tensors"].as_u64().unwrap(),
            "{name}: tensors"
        );
        assert_eq!(
            h.n_params(),
            golden["n_params"].as_u64().unwrap(),
            "{name}: parameters"
        );
        assert_eq!(
            h.data_offset,
            golden["data_offset"].as_u64().unwrap(),
            "{name}: data offset"
        );
        assert_eq!(
            h.architecture(),
            golden["architecture"].as_str(),
            "{name}: architecture"
        );
        for (ours, theirs) in h.tensors.iter().zip(golden["tensors"].as_array().unwrap()) {
            assert_eq!(ours.name, theirs["name"].as_str().unwrap());
            assert_eq!(
                ours.ggml_type.name().to_ascii_lowercase(),
                theirs["type"].as_str().unwrap(),
                "{}",
                ours.name
            );
            let dims: Vec<u64> = theirs["ne"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap())
                .collect();
            assert_eq!(ours.dims, dims, "{}", ours.name);
            assert_eq!(
                ours.data_bytes,
                theirs["n_bytes"].as_u64().unwrap(),
                "{}",
                ours.name
            );
        }
    }
}

#[test]
fn planned_file_size_and_params_match_the_files_within_1_percent() {
    for name in REAL_GGUFS {
        let path = testdata_file(name);
        let model = ModelDescription::from_path(&path).unwrap();
        let stored = model.stored.as_ref().unwrap();
        let on_disk = std::fs::metadata(&path).unwrap().len();
        let h = GgufHeader::read_path(&path).unwrap();
        let predicted_file = h.data_offset + model.weights(None).total_bytes;
        let err = (predicted_file as f64 - on_disk as f64).abs() / on_disk as f64;
        assert!(
            err < 0.01,
            "{name}: header + priced tensors = {predicted_file}, file = {on_disk}"
        );
        assert_eq!(stored.params, model.weights(None).params, "{name}");
        // The config read from GGUF metadata rebuilds the same inventory a converter writes.
        let rebuilt = forja_arch::tensors::decoder_tensors(&model.config);
        let rebuilt_params: u64 = rebuilt.iter().map(|t| t.n_elems()).sum();
        let err = (rebuilt_params as f64 - stored.params as f64).abs() / stored.params as f64;
        assert!(
            err < 0.01,
            "{name}: config-derived params {rebuilt_params} vs file {}",
            stored.params
        );
    }
}

/// The per-tensor types llama.cpp's recipe picks, predicted from shapes alone, are the types in
/// the real files.
#[test]
fn recipe_predicts_the_types_in_real_files() {
    for name in REAL_GGUFS {
        let path = testdata_file(name);
        let model = ModelDescription::from_path(&path).unwrap();
        let stored = model.stored.as_ref().unwrap();
        let Some(WeightFormat::Gguf(recipe)) = stored.format else {
            panic!("{name}: not a recipe")
        };
        let predicted = assign_types(recipe, &model.config, &model.tensors);
        let actual = model.stored_types.as_ref().unwrap();
        let mismatches: Vec<String> = model
            .tensors
            .iter()
            .zip(predicted.iter().zip(actual))
            .filter(|(_, (p, a))| p != a)
            .map(|(t, (p, a))| format!("{}: predicted {p}, file has {a}", t.name))
            .collect();
        assert!(mismatches.is_empty(), "{name}:\n{}", mismatches.join("\n"));
    }
}
