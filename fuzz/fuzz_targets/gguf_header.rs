//! Fuzz target: any bytes through the GGUF header reader and the GGUF → config mapping must give
//! a value or an error, never a panic, hang or unbounded allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = forja_arch::GgufHeader::read(std::io::Cursor::new(data), data.len() as u64) {
        if let Ok(cfg) = forja_arch::gguf_config::from_gguf(&h) {
            let tensors = forja_arch::tensors::gguf_tensors(&h);
            let _ = forja_arch::weights::price_weights(&cfg, &tensors, forja_arch::WeightFormat::Bf16);
            let _ = forja_arch::kv_cache::kv_bytes(&cfg, 4096, forja_arch::KvDtype::F16);
        }
    }
});
