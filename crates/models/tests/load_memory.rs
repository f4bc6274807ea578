//! What a loaded model holds against what the planner prices for its weights
//! (`ModelDescription::weights`, the bytes `forja plan` counts): this test binary counts every
//! heap allocation and loads the real GGUFs on the CPU. The token embedding table stays as the
//! file stores it (widened to f32 it held 2.2× the file's weights for SmolLM2, whose tied head
//! kept a second, quantized copy) — and a lookup gives the rows the f32 table gave.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

use candle_core::Device;
use forja_arch::ModelDescription;
use forja_testkit::heap::{self, Counting};
use forja_testkit::{REAL_GGUFS, testdata_file};

#[global_allocator]
static HEAP: Counting = Counting;

/// One test: the counter sees the whole process, so the models load one after another.
#[test]
fn a_loaded_gguf_holds_what_the_planner_prices() {
    for name in REAL_GGUFS {
        let path = testdata_file(name);
        let desc = ModelDescription::from_path(&path).unwrap();
        let planned = desc.weights(None).total_bytes as f64;
        let before = heap::live();
        let model = forja_models::loader::load(&path, &Device::Cpu).unwrap();
        let held = heap::live().saturating_sub(before) as f64;
        let ratio = held / planned;
        println!(
            "{name}: {:.1} MB held, {:.1} MB planned: {ratio:.3}",
            held / 1e6,
            planned / 1e6
        );
        assert!(
            (0.99..=1.03).contains(&ratio),
            "{name}: the loaded model holds {held} bytes, the planner prices {planned} ({ratio:.3})"
        );
        // Rows looked up in the stored table are the f32 table's rows.
        let dense = forja_models::loader::load_with(
            &path,
            &Device::Cpu,
            forja_models::loader::LoadOptions {
                dequantize: true,
                ..Default::default()
            },
        )
        .unwrap();
        let vocab = desc.config.vocab_size as u32;
        let ids = [0, 1, 17, vocab / 2, vocab - 1];
        let got = model.embed_rows(&ids).unwrap();
        let want = dense.embed_rows(&ids).unwrap();
        assert_eq!(got, want, "{name}: embedding rows {ids:?}");
        assert!(
            model.embed_rows(&[vocab]).is_err(),
            "{name}: an id past the vocabulary is refused"
        );
        drop((model, dense));
    }
}
