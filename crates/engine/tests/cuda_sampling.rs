//! Tokens picked on the GPU (`sample_rows`) against the engine's sampler on the same logits, on
//! a machine with an NVIDIA GPU (`scripts/cuda/conformance run`): every rule (temperature,
//! top-k, top-p, min-p, the seeded draw, ties to the lower id, masked and NaN logits) must give
//! the host's token and its log-probability.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

use forja_engine::{Sampler, SamplingParams};
use forja_kernels::cuda::Gpu;
use forja_kernels::{DevicePick, picked};

/// Log-probabilities: f32 sums in another order than the host's.
const LOGPROB_TOLERANCE: f32 = 1e-4;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// A row of logits of one of several kinds: spread out, peaked, with many ties, with masked
/// (−∞) and NaN entries, or with no finite value at all.
fn logits(rng: &mut Rng, vocab: usize, kind: usize) -> Vec<f32> {
    (0..vocab)
        .map(|_| {
            let x = (rng.unit() - 0.5) * 12.0;
            match kind {
                0 => x,
                // A few clear favourites above a flat floor.
                1 => {
                    if rng.unit() < 0.001 {
                        x + 14.0
                    } else {
                        x * 0.2
                    }
                }
                // Ties: values on a coarse grid.
                2 => (x * 0.5).round(),
                // Masked and NaN entries among the rest.
                3 => match rng.next() % 10 {
                    0 => f32::NEG_INFINITY,
                    1 => f32::NAN,
                    _ => x,
                },
                _ => f32::NEG_INFINITY,
            }
        })
        .collect()
}

#[test]
fn gpu_picks_are_the_host_samplers_picks() {
    let gpu = Gpu::open(0).unwrap_or_else(|e| panic!("this test needs an NVIDIA GPU: {e}"));
    println!("{}", gpu.name());
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let settings: Vec<(f32, usize, f32, f32)> = vec![
        (0.0, 0, 1.0, 0.0),
        (0.7, 40, 0.95, 0.05),
        (1.0, 0, 1.0, 0.0),
        (1.0, 0, 0.9, 0.0),
        (0.5, 0, 1.0, 0.1),
        (1.3, 1000, 0.5, 0.0),
        (0.9, 5, 1.0, 0.0),
        (0.8, 1, 1.0, 0.0),
        (2.0, 0, 0.0, 0.0),
        (1.0, 64, 0.999, 0.5),
    ];
    let mut checked = 0;
    for vocab in [17, 1000, 32_000, 128_256] {
        let mut rows = Vec::new();
        let mut params = Vec::new();
        for (s, &(temperature, top_k, top_p, min_p)) in settings.iter().enumerate() {
            for kind in 0..5 {
                // Rows with no finite logit only once per vocabulary.
                if kind == 4 && s > 0 {
                    continue;
                }
                rows.push(logits(&mut rng, vocab, kind));
                params.push(SamplingParams {
                    temperature,
                    top_k,
                    top_p,
                    min_p,
                    seed: rng.next(),
                    ..SamplingParams::greedy()
                });
            }
        }
        let flat: Vec<f32> = rows.concat();
        let words: Vec<u32> = params
            .iter()
            .flat_map(|p| {
                let sampler = Sampler::new(p.clone()).unwrap();
                sampler.device_pick().unwrap().words()
            })
            .collect();
        let dev_logits = gpu.upload(&flat).unwrap();
        let dev_params = gpu.upload(&words).unwrap();
        let mut out = gpu.alloc::<u64>(rows.len()).unwrap();
        gpu.sample_rows(&mut out, &dev_logits, &dev_params, rows.len(), vocab)
            .unwrap();
        let first = gpu.download(&out).unwrap();
        // The same picks again: integer sums, no order left to chance.
        gpu.sample_rows(&mut out, &dev_logits, &dev_params, rows.len(), vocab)
            .unwrap();
        assert_eq!(first, gpu.download(&out).unwrap(), "vocabulary {vocab}");
        for (i, ((row, p), &word)) in rows.iter().zip(&params).zip(&first).enumerate() {
            let host = Sampler::new(p.clone()).unwrap().sample(row, &[], 0);
            match (host, picked(word)) {
                (Err(_), None) => {}
                (Ok(h), Some((token, logprob))) => {
                    assert_eq!(
                        token, h.token,
                        "vocabulary {vocab}, row {i}, {p:?}: the GPU picked {token}, the host {}",
                        h.token
                    );
                    // A NaN logit makes the host's log-probabilities NaN (its normalizer sums
                    // every logit); the GPU's normalizer skips it as both skip it as a choice.
                    assert!(
                        h.logprob.is_nan() || (logprob - h.logprob).abs() <= LOGPROB_TOLERANCE,
                        "vocabulary {vocab}, row {i}: log-probability {logprob} vs {}",
                        h.logprob
                    );
                }
                (h, d) => panic!("vocabulary {vocab}, row {i}: host {h:?}, GPU {d:?}"),
            }
            checked += 1;
        }
    }
    println!("{checked} rows picked as the host picks them");
}

#[test]
fn a_device_pick_follows_the_generator_state() {
    // One row, many draws: the GPU's sequence of picks is the host sampler's sequence.
    let gpu = Gpu::open(0).unwrap_or_else(|e| panic!("this test needs an NVIDIA GPU: {e}"));
    let mut rng = Rng(42);
    let vocab = 32_000;
    let row = logits(&mut rng, vocab, 0);
    let params = SamplingParams {
        temperature: 1.0,
        top_k: 0,
        top_p: 1.0,
        min_p: 0.0,
        seed: 11,
        ..SamplingParams::greedy()
    };
    let mut host = Sampler::new(params.clone()).unwrap();
    let mut device = Sampler::new(params).unwrap();
    let dev_logits = gpu.upload(&row).unwrap();
    let mut out = gpu.alloc::<u64>(1).unwrap();
    let mut distinct = std::collections::HashSet::new();
    for step in 0..200 {
        let words = device.device_pick().unwrap().words();
        let dev_params = gpu.upload(&words).unwrap();
        gpu.sample_rows(&mut out, &dev_logits, &dev_params, 1, vocab)
            .unwrap();
        let (token, _) = picked(gpu.download(&out).unwrap()[0]).unwrap();
        device.picked_on_device();
        let h = host.sample(&row, &[], 0).unwrap();
        assert_eq!(token, h.token, "draw {step}");
        distinct.insert(token);
    }
    // A flat distribution over 32,000 tokens: the draws must move.
    assert!(distinct.len() > 150, "{} distinct tokens", distinct.len());
}

#[test]
fn many_full_vocabulary_rows_pick_the_same_tokens_every_launch() {
    // Up to 256 rows of 128,256 logits: every launch gives the first launch's picks, greedy
    // rows the argmax. The time per launch is printed for reading beside a step, not asserted.
    let gpu = Gpu::open(0).unwrap_or_else(|e| panic!("this test needs an NVIDIA GPU: {e}"));
    let mut rng = Rng(7);
    let vocab = 128_256;
    // Uniform logits (wide nuclei: a top-p cut takes the radix passes), then a few clear
    // favourites (the few leading elements a cut keeps are sorted in shared memory).
    for (rows, kind) in [
        (1, 0),
        (16, 0),
        (64, 0),
        (256, 0),
        (1, 1),
        (64, 1),
        (256, 1),
    ] {
        let flat: Vec<f32> = (0..rows)
            .flat_map(|_| logits(&mut rng, vocab, kind))
            .collect();
        let dev_logits = gpu.upload(&flat).unwrap();
        let mut out = gpu.alloc::<u64>(rows).unwrap();
        for (name, pick) in [
            ("greedy", DevicePick::GREEDY),
            (
                "temperature 0.7, top-k 40, top-p 0.95, min-p 0.05",
                DevicePick {
                    temperature: 0.7,
                    top_k: 40,
                    top_p: 0.95,
                    min_p: 0.05,
                    rng_state: 1,
                },
            ),
            (
                "temperature 1, top-p 0.9",
                DevicePick {
                    temperature: 1.0,
                    top_k: 0,
                    top_p: 0.9,
                    min_p: 0.0,
                    rng_state: 1,
                },
            ),
        ] {
            let words: Vec<u32> = (0..rows).flat_map(|_| pick.words()).collect();
            let dev_params = gpu.upload(&words).unwrap();
            gpu.sample_rows(&mut out, &dev_logits, &dev_params, rows, vocab)
                .unwrap();
            let first = gpu.download(&out).unwrap();
            let reps = 20;
            let t = std::time::Instant::now();
            for _ in 0..reps {
                gpu.sample_rows(&mut out, &dev_logits, &dev_params, rows, vocab)
                    .unwrap();
            }
            gpu.synchronize().unwrap();
            let elapsed = t.elapsed();
            let last = gpu.download(&out).unwrap();
            assert_eq!(
                first, last,
                "{rows} rows, {name}: picks changed between launches"
            );
            for (r, &word) in last.iter().enumerate().take(rows) {
                let (token, _) = picked(word).unwrap();
                assert!(
                    (token as usize) < vocab,
                    "{rows} rows, {name}: token {token}"
                );
                if pick.temperature == 0.0 {
                    let row = &flat[r * vocab..(r + 1) * vocab];
                    let best = (0..vocab).fold(0, |b, i| if row[i] > row[b] { i } else { b });
                    assert_eq!(token as usize, best, "{rows} rows, greedy row {r}");
                }
            }
            let logits_kind = if kind == 0 { "uniform" } else { "favourites" };
            println!(
                "{rows} rows × {vocab} ({logits_kind}): {name}: {:.1} µs",
                elapsed.as_secs_f64() * 1e6 / f64::from(reps)
            );
        }
    }
}
