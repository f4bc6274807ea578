//! Sampling the next token from logits: logit bias, repetition / frequency / presence penalties,
//! temperature, top-k, top-p, min-p, with a seeded generator (same seed, same tokens); greedy at
//! temperature 0. Log-probabilities are those of the temperature-scaled distribution after bias
//! and penalties, before top-k / top-p / min-p cut it.

use std::collections::HashMap;

use forja_models::DevicePick;

use crate::error::{EngineError, Result};

/// The error of a pick with no finite logit left (masked out by a constraint or a bias, or
/// picked on the device over such logits).
pub(crate) const ALL_MASKED: &str = "every token is masked out";

#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 = greedy.
    pub temperature: f32,
    /// 0 = off.
    pub top_k: usize,
    /// 1 = off.
    pub top_p: f32,
    /// 0 = off.
    pub min_p: f32,
    /// 1 = off; >1 divides positive logits (multiplies negative ones) of tokens already in the
    /// context, the whole context as transformers does (llama.cpp looks at the last 64 tokens).
    pub repetition_penalty: f32,
    /// Subtracted once per previous occurrence (OpenAI semantics).
    pub frequency_penalty: f32,
    /// Subtracted once if the token occurred (OpenAI semantics).
    pub presence_penalty: f32,
    pub logit_bias: HashMap<u32, f32>,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.7,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repetition_penalty: 1.0,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            logit_bias: HashMap::new(),
            seed: 0,
        }
    }
}

impl SamplingParams {
    pub fn greedy() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            ..Default::default()
        }
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(EngineError::Sampling(m));
        if !(0.0..=100.0).contains(&self.temperature) || self.temperature.is_nan() {
            return bad(format!("temperature {} outside 0..=100", self.temperature));
        }
        if !(0.0..=1.0).contains(&self.top_p) || self.top_p.is_nan() {
            return bad(format!("top_p {} outside 0..=1", self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) || self.min_p.is_nan() {
            return bad(format!("min_p {} outside 0..=1", self.min_p));
        }
        if self.repetition_penalty.is_nan() || self.repetition_penalty <= 0.0 {
            return bad(format!(
                "repetition_penalty {} must be positive",
                self.repetition_penalty
            ));
        }
        for (name, v) in [
            ("frequency_penalty", self.frequency_penalty),
            ("presence_penalty", self.presence_penalty),
        ] {
            if !(-2.0..=2.0).contains(&v) {
                return bad(format!("{name} {v} outside -2..=2"));
            }
        }
        if let Some((id, b)) = self
            .logit_bias
            .iter()
            .find(|(_, b)| !(-100.0..=100.0).contains(*b))
        {
            return bad(format!("logit_bias {b} for token {id} outside -100..=100"));
        }
        Ok(())
    }
}

/// SplitMix64's output function: every bit of `z` affects every bit of the result.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// SplitMix64: a small, well-distributed, reproducible generator.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.0)
    }

    /// The state the next draw starts from.
    pub fn state(&self) -> u64 {
        self.0
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A sampled token with its log-probability and the top alternatives.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampled {
    pub token: u32,
    pub logprob: f32,
    /// `(token, logprob)` of the most likely tokens, best first.
    pub top: Vec<(u32, f32)>,
}

#[derive(Debug)]
pub struct Sampler {
    params: SamplingParams,
    rng: Rng,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Result<Self> {
        params.validate()?;
        let rng = Rng::new(params.seed);
        Ok(Sampler { params, rng })
    }

    /// These rules for a pick made on the device (`forja_models::SeqOutput::Picked`), where
    /// they need nothing but the logits: no penalties or logit bias (those read the history).
    /// Requests that mask logits (structured output) or report alternatives stay on the host;
    /// the caller knows those.
    pub fn device_pick(&self) -> Option<DevicePick> {
        let p = &self.params;
        let host_only = !p.logit_bias.is_empty()
            || p.repetition_penalty != 1.0
            || p.frequency_penalty != 0.0
            || p.presence_penalty != 0.0;
        (!host_only).then(|| DevicePick {
            temperature: p.temperature,
            top_k: u32::try_from(p.top_k).unwrap_or(u32::MAX),
            top_p: p.top_p,
            min_p: p.min_p,
            rng_state: self.rng.state(),
        })
    }

    /// Records a pick made on the device by [`Sampler::device_pick`]'s rules: the generator
    /// moves on as [`Sampler::sample`] would have moved it (one draw unless greedy).
    pub fn picked_on_device(&mut self) {
        if self.params.temperature != 0.0 {
            self.rng.next_u64();
        }
    }

    /// Picks the next token. `history` is every token of the sequence so far (for penalties);
    /// `top_logprobs` alternatives are reported.
    pub fn sample(
        &mut self,
        logits: &[f32],
        history: &[u32],
        top_logprobs: usize,
    ) -> Result<Sampled> {
        if logits.is_empty() {
            return Err(EngineError::Input("no logits to sample from".into()));
        }
        let p = &self.params;
        let penalties =
            p.repetition_penalty != 1.0 || p.frequency_penalty != 0.0 || p.presence_penalty != 0.0;
        // The logits are copied only when biases or penalties change them.
        let mut l: std::borrow::Cow<'_, [f32]> = std::borrow::Cow::Borrowed(logits);
        if !p.logit_bias.is_empty() || penalties {
            let l = l.to_mut();
            for (&id, &bias) in &p.logit_bias {
                if let Some(x) = l.get_mut(id as usize) {
                    *x += bias;
                }
            }
        }
        if penalties {
            let l = l.to_mut();
            let mut counts: HashMap<u32, u32> = HashMap::new();
            for &t in history {
                *counts.entry(t).or_default() += 1;
            }
            for (&t, &n) in &counts {
                if let Some(x) = l.get_mut(t as usize) {
                    if p.repetition_penalty != 1.0 {
                        *x = if *x > 0.0 {
                            *x / p.repetition_penalty
                        } else {
                            *x * p.repetition_penalty
                        };
                    }
                    *x -= p.frequency_penalty * n as f32 + p.presence_penalty;
                }
            }
        }
        let l: &[f32] = &l;
        let greedy = p.temperature == 0.0;
        let t = if greedy { 1.0 } else { p.temperature };
        // Only the candidates that can be chosen or reported need their order: the best few for
        // greedy decoding and top-k; without a top-k, as many as the pick walks.
        let ordered = if greedy {
            top_logprobs.max(1)
        } else if p.top_k > 0 {
            p.top_k.max(top_logprobs)
        } else {
            usize::MAX
        };
        // Candidates best first (ties by lower id, for determinism), ranked as far as the pick
        // walks: the best few in one pass, a top-k by selection, a whole vocabulary on demand.
        let mut rank = if ordered <= FEW {
            let idx = best_few(l, ordered);
            // Fewer than asked for: every finite candidate.
            let complete = idx.len() < ordered;
            Ranking::sorted(l, idx, complete)
        } else {
            let idx: Vec<usize> = (0..l.len()).filter(|&i| l[i].is_finite()).collect();
            Ranking::ranked(l, idx, ordered)
        };
        if rank.len() == 0 {
            return Err(EngineError::Input(ALL_MASKED.into()));
        }
        let best = rank.at(0);
        let max = l[best];
        let inv = 1.0 / t;
        // Every finite candidate's weight `q = e^((x − max)/t)`, summed once.
        let all = sum_exp(l, max, inv);
        let log_z = max + (all.ln() as f32) * t;
        let logprob = |i: usize| (l[i] - log_z) / t;
        let top: Vec<(u32, f32)> = (0..top_logprobs.min(rank.len()))
            .map(|k| {
                let i = rank.at(k);
                (i as u32, logprob(i))
            })
            .collect();
        if greedy {
            return Ok(Sampled {
                token: best as u32,
                logprob: logprob(best),
                top,
            });
        }
        let mut keep = rank.len().min(ordered);
        if p.top_k > 0 {
            keep = keep.min(p.top_k);
        }
        let q = |i: usize| f64::from(forja_quant::math::exp((l[i] - max) * inv));
        // Σ q over the candidates kept: every finite candidate's, or the ranked ones' in rank
        // order (a top-k).
        let total: f64 = if keep == rank.len() && rank.complete {
            all
        } else {
            (0..keep).map(|k| q(rank.at(k))).sum()
        };
        let mut cut = keep;
        if p.top_p < 1.0 {
            let mut acc = 0.0;
            for k in 0..keep {
                acc += q(rank.at(k)) / total;
                if acc >= f64::from(p.top_p) {
                    cut = k + 1;
                    break;
                }
            }
        }
        if p.min_p > 0.0 {
            let floor = q(best) * f64::from(p.min_p);
            let mut above = 1;
            while above < cut && q(rank.at(above)) >= floor {
                above += 1;
            }
            cut = above;
        }
        let sum: f64 = if cut == keep {
            total
        } else {
            (0..cut).map(|k| q(rank.at(k))).sum()
        };
        let mut r = self.rng.next_f64() * sum;
        let mut choice = None;
        for k in 0..cut {
            let i = rank.at(k);
            let qi = q(i);
            if r < qi {
                choice = Some(i);
                break;
            }
            r -= qi;
        }
        // Rounding can leave `r` just past the last candidate: the last one walked.
        let token = match choice {
            Some(i) => i,
            None => rank.at(cut - 1),
        };
        Ok(Sampled {
            token: token as u32,
            logprob: logprob(token),
            top,
        })
    }
}

/// Finite candidates ranked best first (by logit, ties by lower index) only as far as a pick
/// reads them: each step past the ranked prefix selects and sorts the next stretch (at least
/// as long again as what is ranked) from the rest, so a draw that stops at rank `k` costs
/// `O(len · log k)` instead of a sort of the whole vocabulary.
struct Ranking<'a> {
    l: &'a [f32],
    idx: Vec<usize>,
    /// `idx[..sorted]` is in rank order; the rest holds the other candidates in any order.
    sorted: usize,
    /// Whether `idx` holds every finite candidate (not only the best few).
    complete: bool,
}

impl<'a> Ranking<'a> {
    /// Candidates already in rank order: every finite one when `complete`.
    fn sorted(l: &'a [f32], idx: Vec<usize>, complete: bool) -> Self {
        let sorted = idx.len();
        Ranking {
            l,
            idx,
            sorted,
            complete,
        }
    }

    /// Every finite candidate in any order, the best `first` of them ranked now (all, when
    /// `first` is at least their number; none when `usize::MAX`, the ranking then waits for
    /// [`Ranking::at`]).
    fn ranked(l: &'a [f32], mut idx: Vec<usize>, first: usize) -> Self {
        let sorted = if first == usize::MAX {
            0
        } else {
            let n = first.min(idx.len());
            best_first(&mut idx, n, |&a, &b| l[b].total_cmp(&l[a]).then(a.cmp(&b)));
            n
        };
        Ranking {
            l,
            idx,
            sorted,
            complete: true,
        }
    }

    fn len(&self) -> usize {
        self.idx.len()
    }

    /// The index of the `k`-th best candidate (`k < len`).
    fn at(&mut self, k: usize) -> usize {
        if k >= self.sorted {
            let l = self.l;
            let upto = (k + 1).max(2 * self.sorted).max(FEW).min(self.idx.len());
            best_first(
                &mut self.idx[self.sorted..],
                upto - self.sorted,
                |&a, &b| l[b].total_cmp(&l[a]).then(a.cmp(&b)),
            );
            self.sorted = upto;
        }
        self.idx[k]
    }
}

/// Up to this many best candidates are found in one pass over the logits.
const FEW: usize = 64;

/// The (at most) `n` finite logits' indices, best first, ties by lower index: one pass keeping a
/// small sorted list, for the few candidates greedy decoding and small top-k need.
fn best_few(l: &[f32], n: usize) -> Vec<usize> {
    let mut best: Vec<usize> = Vec::with_capacity(n + 1);
    for (i, &x) in l.iter().enumerate() {
        if !x.is_finite() {
            continue;
        }
        // Later indices lose ties, so only a strictly larger logit displaces the last kept.
        if best.len() == n && best.last().is_some_and(|&j| x <= l[j]) {
            continue;
        }
        let at = best.partition_point(|&j| l[j] >= x);
        best.insert(at, i);
        best.truncate(n);
    }
    best
}

/// `Σ exp((x − max) · inv)` over the logits with a polynomial f32 `exp`
/// ([`forja_quant::math::exp`]): 8 interleaved f32 partial sums over stretches of 512 logits,
/// written so the compiler vectorizes the loop (the vocabulary-wide sum is most of a pick's time
/// otherwise), each stretch's added in f64. Masked (−∞) logits add `e^−87.3 ≈ 1e-38` each
/// instead of 0, far below the sum's rounding (the best logit alone adds 1). The sampler's
/// weights are these same values, so the draw's walk and this total agree.
fn sum_exp(l: &[f32], max: f32, inv: f32) -> f64 {
    let mut total = 0f64;
    for stretch in l.chunks(512) {
        let mut lanes = [0f32; 8];
        let mut chunks = stretch.chunks_exact(8);
        for c in &mut chunks {
            for (acc, &x) in lanes.iter_mut().zip(c) {
                *acc += forja_quant::math::exp((x - max) * inv);
            }
        }
        let tail: f32 = chunks
            .remainder()
            .iter()
            .map(|&x| forja_quant::math::exp((x - max) * inv))
            .sum();
        total += f64::from(lanes.iter().sum::<f32>() + tail);
    }
    total
}

/// Puts the `n` smallest elements of `v` by `cmp` (a total order) first, sorted; the rest
/// follow in no particular order. The same prefix a full sort gives, in O(len + n log n).
fn best_first<T>(v: &mut [T], n: usize, mut cmp: impl FnMut(&T, &T) -> std::cmp::Ordering) {
    if n < v.len() && n > 0 {
        v.select_nth_unstable_by(n - 1, &mut cmp);
        v[..n].sort_unstable_by(cmp);
    } else {
        v.sort_unstable_by(cmp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_picks_carry_the_generator_and_move_it_as_a_host_pick_does() {
        let params = SamplingParams {
            seed: 7,
            ..Default::default()
        };
        let logits: Vec<f32> = (0..50).map(|i| ((i * 37) % 11) as f32 * 0.3).collect();
        let mut host = Sampler::new(params.clone()).unwrap();
        let mut device = Sampler::new(params.clone()).unwrap();
        let pick = device.device_pick().unwrap();
        assert_eq!(
            (pick.temperature, pick.top_k, pick.top_p, pick.min_p),
            (0.7, 40, 0.95, 0.05)
        );
        assert_eq!(pick.rng_state, 7);
        host.sample(&logits, &[], 0).unwrap();
        device.picked_on_device();
        assert_eq!(host.device_pick(), device.device_pick());
        assert_ne!(device.device_pick().unwrap().rng_state, 7);
        assert_eq!(
            host.sample(&logits, &[], 0).unwrap(),
            device.sample(&logits, &[], 0).unwrap()
        );
        // A greedy pick draws nothing.
        let mut greedy = Sampler::new(SamplingParams::greedy()).unwrap();
        greedy.picked_on_device();
        assert_eq!(greedy.device_pick().unwrap().rng_state, 0);
        // Rules that read the history stay on the host.
        for p in [
            SamplingParams {
                repetition_penalty: 1.1,
                ..params.clone()
            },
            SamplingParams {
                frequency_penalty: 0.5,
                ..params.clone()
            },
            SamplingParams {
                presence_penalty: -0.5,
                ..params.clone()
            },
            SamplingParams {
                logit_bias: HashMap::from([(3, 2.0)]),
                ..params.clone()
            },
        ] {
            assert!(Sampler::new(p).unwrap().device_pick().is_none());
        }
    }

    #[test]
    fn the_one_pass_ranking_agrees_with_a_full_sort() {
        // Random logits with ties and masked (−∞) entries: the same ranking as a full sort.
        let mut state = 9u64;
        for len in [1usize, 5, 70, 1000] {
            let l: Vec<f32> = (0..len)
                .map(|_| {
                    state = state
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1);
                    match state >> 60 {
                        0 => f32::NEG_INFINITY,
                        r => (r % 7) as f32 * 0.5,
                    }
                })
                .collect();
            let mut all: Vec<usize> = (0..len).filter(|&i| l[i].is_finite()).collect();
            all.sort_by(|&a, &b| l[b].total_cmp(&l[a]).then(a.cmp(&b)));
            for n in [1, 2, 10, 64] {
                let want: Vec<usize> = all.iter().copied().take(n).collect();
                assert_eq!(best_few(&l, n), want, "len {len}, n {n}");
            }
            let max = all.first().map_or(0.0, |&i| l[i]);
            let exact: f64 = l
                .iter()
                .filter(|x| x.is_finite())
                .map(|&x| f64::from(x - max).exp())
                .sum();
            let fast = sum_exp(&l, max, 1.0);
            assert!((fast - exact).abs() <= exact * 1e-6, "{fast} vs {exact}");
        }
    }

    /// A pick that ranks the vocabulary only as far as it walks gives the token a walk over the
    /// fully sorted vocabulary gives (the same weights and draw), under every cut, on large
    /// vocabularies with ties, masked entries and long tails.
    #[test]
    fn ranking_on_demand_picks_what_a_full_sort_picks() {
        let mut data = Rng::new(3);
        let mut next = || data.next_u64() >> 11;
        let rules = [
            (0.0f32, 0usize, 1.0f32),
            (0.0, 0, 0.9),
            (0.1, 0, 1.0),
            (0.02, 0, 0.7),
            (0.0, 5, 1.0),
            (0.05, 5, 0.9),
            (0.0, 100, 1.0),
            (0.0, 100, 0.8),
        ];
        for (case, len) in [3usize, 100, 5_000, 40_000].into_iter().enumerate() {
            let l: Vec<f32> = (0..len)
                .map(|i| match next() % 64 {
                    0 => f32::NEG_INFINITY,
                    r => ((r % 9) as f32) * 0.25 - 1.5 * ((1 + (i * 31) % len) as f32).ln(),
                })
                .collect();
            for &(min_p, top_k, top_p) in &rules {
                for t in [0.6f32, 1.0, 1.7] {
                    let params = SamplingParams {
                        temperature: t,
                        top_k,
                        top_p,
                        min_p,
                        seed: case as u64 * 100 + 7,
                        ..Default::default()
                    };
                    let mut sampler = Sampler::new(params.clone()).unwrap();
                    let mut rng = Rng::new(params.seed);
                    let mut all: Vec<usize> = (0..len).filter(|&i| l[i].is_finite()).collect();
                    all.sort_by(|&a, &b| l[b].total_cmp(&l[a]).then(a.cmp(&b)));
                    let max = l[all[0]];
                    let q: Vec<f64> = all
                        .iter()
                        .map(|&i| f64::from(forja_quant::math::exp((l[i] - max) * (1.0 / t))))
                        .collect();
                    let keep = if top_k > 0 {
                        top_k.min(q.len())
                    } else {
                        q.len()
                    };
                    let total: f64 = q[..keep].iter().sum();
                    let mut cut = keep;
                    if top_p < 1.0 {
                        let mut acc = 0.0;
                        cut = q[..keep]
                            .iter()
                            .position(|x| {
                                acc += x / total;
                                acc >= f64::from(top_p)
                            })
                            .map_or(cut, |k| k + 1);
                    }
                    if min_p > 0.0 {
                        let floor = q[0] * f64::from(min_p);
                        cut = cut.min(q.iter().take_while(|&&x| x >= floor).count().max(1));
                    }
                    for _ in 0..20 {
                        let sum: f64 = q[..cut].iter().sum();
                        let mut r = rng.next_f64() * sum;
                        let mut want = all[cut - 1];
                        for (k, x) in q[..cut].iter().enumerate() {
                            if r < *x {
                                want = all[k];
                                break;
                            }
                            r -= x;
                        }
                        let got = sampler.sample(&l, &[], 0).unwrap().token as usize;
                        assert_eq!(got, want, "len {len}, t {t}, min_p {min_p}, top_p {top_p}");
                    }
                }
            }
        }
    }

    #[test]
    fn greedy_takes_the_argmax_with_its_logprob() {
        let mut s = Sampler::new(SamplingParams::greedy()).unwrap();
        let out = s.sample(&[0.0, 2.0, 1.0], &[], 2).unwrap();
        assert_eq!(out.token, 1);
        let z = (0f32.exp() + 2f32.exp() + 1f32.exp()).ln();
        assert!((out.logprob - (2.0 - z)).abs() < 1e-6);
        assert_eq!(out.top.iter().map(|t| t.0).collect::<Vec<_>>(), vec![1, 2]);
    }

    #[test]
    fn same_seed_same_tokens_and_frequencies_follow_probabilities() {
        let logits = [1.0f32, 2.0, 0.5, 1.5];
        let params = SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed: 7,
            ..Default::default()
        };
        let draw = |n: usize| {
            let mut s = Sampler::new(params.clone()).unwrap();
            (0..n)
                .map(|_| s.sample(&logits, &[], 0).unwrap().token)
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(50), draw(50));
        let many = draw(20_000);
        let z: f32 = logits.iter().map(|l| l.exp()).sum();
        for (i, l) in logits.iter().enumerate() {
            let freq = many.iter().filter(|&&t| t as usize == i).count() as f32 / many.len() as f32;
            assert!((freq - l.exp() / z).abs() < 0.015, "token {i}: {freq}");
        }
    }

    /// The tokens 400 draws pick under `top_k`, `top_p`, `min_p` (temperature 1).
    fn drawn(
        logits: &[f32],
        top_k: usize,
        top_p: f32,
        min_p: f32,
    ) -> std::collections::BTreeSet<u32> {
        let mut s = Sampler::new(SamplingParams {
            temperature: 1.0,
            top_k,
            top_p,
            min_p,
            ..Default::default()
        })
        .unwrap();
        (0..400)
            .map(|_| s.sample(logits, &[], 0).unwrap().token)
            .collect()
    }

    #[test]
    fn top_k_top_p_min_p_and_bias_restrict_the_choice() {
        let logits = [5.0f32, 4.9, 0.0, -1.0];
        // Unrestricted, the two likely tokens both come up; each filter keeps exactly its set.
        assert!(drawn(&logits, 0, 1.0, 0.0).len() >= 2);
        assert_eq!(drawn(&logits, 2, 1.0, 0.0), [0, 1].into());
        assert_eq!(drawn(&logits, 0, 0.5, 0.0), [0].into());
        assert_eq!(drawn(&logits, 0, 1.0, 0.5), [0, 1].into());
        let mut bias = SamplingParams::greedy();
        bias.logit_bias.insert(3, 100.0);
        assert_eq!(
            Sampler::new(bias)
                .unwrap()
                .sample(&logits, &[], 0)
                .unwrap()
                .token,
            3
        );
    }

    #[test]
    fn penalties_discourage_repeats() {
        let logits = [2.0f32, 1.9];
        let pick = |p: &SamplingParams, history: &[u32]| {
            Sampler::new(p.clone())
                .unwrap()
                .sample(&logits, history, 0)
                .unwrap()
                .token
        };
        let mut p = SamplingParams::greedy();
        p.repetition_penalty = 1.5;
        assert_eq!(pick(&p, &[0]), 1);
        p.repetition_penalty = 1.0;
        p.presence_penalty = 0.5;
        assert_eq!(pick(&p, &[0]), 1);
        p.presence_penalty = 0.0;
        p.frequency_penalty = 0.06;
        assert_eq!(pick(&p, &[0]), 0);
        assert_eq!(pick(&p, &[0, 0]), 1);
    }

    #[test]
    fn invalid_parameters_are_rejected() {
        for p in [
            SamplingParams {
                temperature: -1.0,
                ..Default::default()
            },
            SamplingParams {
                top_p: 1.5,
                ..Default::default()
            },
            SamplingParams {
                repetition_penalty: 0.0,
                ..Default::default()
            },
            SamplingParams {
                presence_penalty: 3.0,
                ..Default::default()
            },
            SamplingParams {
                logit_bias: [(1, f32::INFINITY)].into(),
                ..Default::default()
            },
            SamplingParams {
                logit_bias: [(1, f32::NAN)].into(),
                ..Default::default()
            },
        ] {
            assert!(Sampler::new(p).is_err());
        }
    }
}
