//! Throughput of `QMatrix::matmul` on the projection shapes of the test models, per type and
//! instruction set: `cargo run --release -p forja-quant --example kernel_bench [-- N [REPS
//! [TYPE [ISA]]]]` (N activation rows: 1 = decode, 128 = a prompt; `RAYON_NUM_THREADS=1` for one
//! thread; TYPE such as `Q5_K` and ISA such as `Avx2` keep only those rows, e.g. to count one
//! kernel's instructions under `valgrind --tool=callgrind`). Prints weight GB/s and GMAC/s.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark tool")]

use std::time::Instant;

use forja_quant::{ActivationType, Isa, QMatrix, QuantType};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1);
    let reps: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(0);
    let only_type = args.get(3).filter(|t| *t != "all");
    let only_isa = args.get(4);
    let isas: Vec<Isa> = Isa::available()
        .into_iter()
        .filter(|i| only_isa.is_none_or(|o| format!("{i:?}") == *o))
        .collect();
    // (type, rows, cols): SmolLM2 k, q, up, down and (part of) the output head, Qwen2.5-0.5B gate and down
    // (Q4_K or Q6_K), Gemma-3-270M down; then the remaining types on one shape.
    let shapes = [
        (QuantType::Q4_1, 192, 576),
        (QuantType::Q4_1, 576, 576),
        (QuantType::Q4_1, 1536, 576),
        (QuantType::Q4_1, 576, 1536),
        (QuantType::Q8_0, 8192, 576),
        (QuantType::Q5_0, 4864, 896),
        (QuantType::Q4K, 896, 4864),
        (QuantType::Q6K, 896, 4864),
        (QuantType::Q4K, 640, 2048),
        (QuantType::Q5K, 1024, 2048),
        (QuantType::Q4_0, 1024, 2048),
        (QuantType::Q5_1, 1024, 2048),
        (QuantType::Q3K, 1024, 2048),
        (QuantType::Q2K, 1024, 2048),
        (QuantType::F16, 4864, 896),
        (QuantType::F16, 896, 4864),
        (QuantType::BF16, 4864, 896),
        (QuantType::F16, 151936, 896),
    ];
    let mut seed = 0x1234_5678_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    println!("n = {n}; threads: RAYON_NUM_THREADS, else every CPU");
    for &isa in isas.iter().filter(|_| only_type.is_none()) {
        let x: Vec<f32> = (0..n * 4864)
            .map(|i| ((i * 7919) % 2000) as f32 / 1000.0 - 1.0)
            .collect();
        let mut acts = forja_quant::QuantizedActivations::new();
        for ty in [
            ActivationType::Q8_0,
            ActivationType::Q8_1,
            ActivationType::Q8K,
        ] {
            let t = Instant::now();
            for _ in 0..50 {
                acts.quantize_with(isa, ty, &x, n, 4864).unwrap();
            }
            let s = t.elapsed().as_secs_f64() / 50.0;
            println!("quantize {n}×4864 to {ty:?} on {isa:?}: {:.1} µs", s * 1e6);
        }
    }
    println!("| type | rows×cols | isa | µs/call | weight GB/s | GMAC/s |");
    println!("|---|---|---|---|---|---|");
    for (ty, rows, cols) in shapes {
        if only_type.is_some_and(|t| *t != ty.to_string()) {
            continue;
        }
        let bytes = ty.row_bytes(cols).unwrap() * rows;
        let mut data: Vec<u8> = (0..bytes).map(|_| next() as u8).collect();
        // Finite f16 scales (and f16/bf16 values): clear the exponent's top bit of every byte
        // pair's high byte.
        for b in data.iter_mut().skip(1).step_by(2) {
            *b &= 0x3B;
        }
        let t = Instant::now();
        let m = QMatrix::new(ty, rows, cols, data).unwrap();
        let load = t.elapsed().as_secs_f64();
        println!(
            "| {ty} | {rows}×{cols} | load (reorder) | {:.1} | {:.2} | - |",
            load * 1e6,
            bytes as f64 / load / 1e9
        );
        let x: Vec<f32> = (0..n * cols)
            .map(|_| (next() % 2000) as f32 / 1000.0 - 1.0)
            .collect();
        let mut out = vec![0f32; n * rows];
        for &isa in &isas {
            let call = |out: &mut [f32]| m.matmul_with(isa, &x, n, out).unwrap();
            call(&mut out);
            let reps = if reps > 0 {
                reps
            } else {
                let t = Instant::now();
                call(&mut out);
                ((0.3 / t.elapsed().as_secs_f64().max(1e-7)) as usize).clamp(3, 20_000)
            };
            let t = Instant::now();
            for _ in 0..reps {
                call(&mut out);
            }
            let s = t.elapsed().as_secs_f64() / reps as f64;
            println!(
                "| {ty} | {rows}×{cols} | {isa:?} | {:.1} | {:.2} | {:.2} |",
                s * 1e6,
                bytes as f64 / s / 1e9,
                (n * rows * cols) as f64 / s / 1e9
            );
        }
    }
}
