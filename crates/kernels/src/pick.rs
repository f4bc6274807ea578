//! How a row's next token is chosen on the GPU (`sample.cu`): the rules of the engine's sampler
//! (temperature, top-k, top-p, min-p, a SplitMix64 draw at the sequence's generator state), so a
//! sequence picks the same tokens on either side given the same logits.

/// One row's sampling parameters, as the engine's sampler holds them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DevicePick {
    /// 0: greedy (the best logit, the lowest id on ties).
    pub temperature: f32,
    /// 0: off.
    pub top_k: u32,
    /// 1: off.
    pub top_p: f32,
    /// 0: off.
    pub min_p: f32,
    /// The sequence's SplitMix64 state before this draw (the draw adds the golden-ratio
    /// increment, then mixes); greedy rows draw nothing.
    pub rng_state: u64,
}

/// Words per row of the parameter buffer `sample_rows` reads.
pub const PICK_WORDS: usize = 8;

impl DevicePick {
    pub const GREEDY: DevicePick = DevicePick {
        temperature: 0.0,
        top_k: 0,
        top_p: 1.0,
        min_p: 0.0,
        rng_state: 0,
    };

    /// The row's words in the parameter buffer.
    pub fn words(&self) -> [u32; PICK_WORDS] {
        [
            self.temperature.to_bits(),
            self.top_k,
            self.top_p.to_bits(),
            self.min_p.to_bits(),
            self.rng_state as u32,
            (self.rng_state >> 32) as u32,
            0,
            0,
        ]
    }
}

/// A row's pick as `sample_rows` writes it: the token and its log-probability under the
/// tempered distribution, or `None` when the row had no finite logit.
pub fn picked(word: u64) -> Option<(u32, f32)> {
    let token = word as u32;
    (token != u32::MAX).then(|| (token, f32::from_bits((word >> 32) as u32)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_and_picks_round_trip_through_their_words() {
        let p = DevicePick {
            temperature: 0.7,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            rng_state: 0x0123_4567_89ab_cdef,
        };
        let w = p.words();
        assert_eq!(f32::from_bits(w[0]), 0.7);
        assert_eq!(w[1], 40);
        assert_eq!(f32::from_bits(w[2]), 0.95);
        assert_eq!(f32::from_bits(w[3]), 0.05);
        assert_eq!(u64::from(w[4]) | (u64::from(w[5]) << 32), p.rng_state);
        let word = 1234u64 | (u64::from((-0.25f32).to_bits()) << 32);
        assert_eq!(picked(word), Some((1234, -0.25)));
        assert_eq!(picked(u64::from(u32::MAX)), None);
    }
}
