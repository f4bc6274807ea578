#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

//! The heap a loaded tokenizer holds against what the planner prices from the GGUF header
//! (`forja_arch::TokenizerShape`), under a counting allocator. One test: the counters see the
//! whole process.

use forja_arch::{GgufHeader, TokenizerShape};
use forja_testkit::heap::{Counting, live, peak, reset_peak};

#[global_allocator]
static HEAP: Counting = Counting;

#[test]
fn a_loaded_tokenizer_holds_what_the_planner_prices() {
    for file in forja_testkit::REAL_GGUFS {
        let path = forja_testkit::testdata_file(file);
        let shape = TokenizerShape::from_gguf(&GgufHeader::read_path(&path).unwrap()).unwrap();
        assert!(shape.counted, "{file}");
        let content = candle_core::quantized::gguf_file::Content::read(
            &mut std::fs::File::open(&path).unwrap(),
        )
        .unwrap();
        let before = reset_peak();
        let tok = forja_engine::Tokenizer::from_gguf(&content, file).unwrap();
        let held = live() - before;
        let building = peak() - before;
        let priced = shape.heap_bytes();
        let ratio = held as f64 / priced as f64;
        eprintln!(
            "{file}: {} tokens, {} merges, {} bytes of text; held {:.2} MB, priced {:.2} MB \
             ({ratio:.3}); {:.2} MB at most while building",
            shape.tokens,
            shape.merges,
            shape.text_bytes,
            held as f64 / 1e6,
            priced as f64 / 1e6,
            building as f64 / 1e6,
        );
        assert_eq!(shape.tokens, tok.vocab_size() as u64, "{file}");
        assert!(
            (0.97..=1.03).contains(&ratio),
            "{file}: held / priced {ratio:.3}"
        );
        // Building holds about twice what stays (the file's texts and the tables; through a
        // `tokenizer.json` text it was 5–7 times).
        assert!(
            building < 22 * held / 10,
            "{file}: {building} bytes at most while building, {held} held"
        );
        drop(tok);
    }
}
