//! Time of one host pick (`Sampler::sample`) per vocabulary size and sampling rule, on logits
//! shaped like a language model's (a few strong candidates, a long tail):
//! `cargo run --release -p forja-engine --example sampler_bench [-- PICKS]`. Prints a Markdown
//! table of microseconds per pick.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark tool")]

use std::time::Instant;

use forja_engine::sampler::{Rng, Sampler, SamplingParams};

/// Logits of one step: noise on a Zipf-like trend (probability ∝ rank^−1.5), so a few tokens
/// hold most of the probability and a long tail the rest, as a language model's next-token
/// distributions at temperature 1 do.
fn logits(vocab: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..vocab)
        .map(|i| {
            let u = rng.next_f64();
            let rank = ((i * 7919) % vocab) as f64;
            (2.0 * u - 1.5 * (1.0 + rank).ln()) as f32
        })
        .collect()
}

fn main() {
    let picks: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200);
    let rules: [(&str, SamplingParams); 5] = [
        ("greedy", SamplingParams::greedy()),
        (
            "temperature 1 (OpenAI defaults)",
            SamplingParams {
                temperature: 1.0,
                top_k: 0,
                top_p: 1.0,
                min_p: 0.0,
                ..Default::default()
            },
        ),
        (
            "top_p 0.9",
            SamplingParams {
                temperature: 1.0,
                top_k: 0,
                top_p: 0.9,
                min_p: 0.0,
                ..Default::default()
            },
        ),
        (
            "min_p 0.05",
            SamplingParams {
                temperature: 1.0,
                top_k: 0,
                top_p: 1.0,
                min_p: 0.05,
                ..Default::default()
            },
        ),
        ("forja defaults (top_k 40)", SamplingParams::default()),
    ];
    println!("| rule | vocab 49,152 µs | vocab 151,936 µs | vocab 262,144 µs |");
    println!("|---|---|---|---|");
    for (name, params) in rules {
        let mut row = format!("| {name} |");
        for vocab in [49_152usize, 151_936, 262_144] {
            let steps: Vec<Vec<f32>> = (0..8).map(|s| logits(vocab, s + 1)).collect();
            let mut sampler = Sampler::new(params.clone()).unwrap();
            let mut sink = 0u64;
            let start = Instant::now();
            for i in 0..picks {
                sink += u64::from(sampler.sample(&steps[i % 8], &[], 0).unwrap().token);
            }
            let us = start.elapsed().as_secs_f64() * 1e6 / picks as f64;
            std::hint::black_box(sink);
            row.push_str(&format!(" {us:.0} |"));
        }
        println!("{row}");
    }
}
