//! Random blocks, random activations and the reference dot product (dequantize both operands,
//! multiply in f64) shared by the property tests.

#![allow(dead_code, reason = "each test file uses part of the helpers")]

use forja_quant::{ActRow, QuantType};

/// The quantized types with dot products, by impact on the test models first.
pub const QUANTIZED: [QuantType; 10] = [
    QuantType::Q4_1,
    QuantType::Q5_0,
    QuantType::Q8_0,
    QuantType::Q4K,
    QuantType::Q6K,
    QuantType::Q5K,
    QuantType::Q4_0,
    QuantType::Q5_1,
    QuantType::Q3K,
    QuantType::Q2K,
];

/// SplitMix64: a small seeded generator, so a failing case is reproducible from its seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in [-1, 1), never exactly zero.
    pub fn signed(&mut self) -> f32 {
        let v = 2.0 * self.unit() - 1.0;
        if v == 0.0 { 0.5 } else { v }
    }
}

/// Byte offsets of the f16 scales in a block of `ty` (overwritten with finite values, since
/// random bits can be infinities or NaNs).
pub fn f16_fields(ty: QuantType) -> &'static [usize] {
    match ty {
        QuantType::Q4_0 | QuantType::Q5_0 | QuantType::Q8_0 => &[0],
        QuantType::Q4_1 | QuantType::Q5_1 | QuantType::Q4K | QuantType::Q5K => &[0, 2],
        QuantType::Q2K => &[80, 82],
        QuantType::Q3K => &[108],
        QuantType::Q6K => &[208],
        QuantType::F32 | QuantType::F16 | QuantType::BF16 => &[],
    }
}

/// `blocks` random blocks of `ty`: random quant bits, scales of either sign between 1e-4 and
/// 1e-1 (all nonzero).
pub fn random_blocks(ty: QuantType, blocks: usize, rng: &mut Rng) -> Vec<u8> {
    let size = ty.block_bytes();
    let mut data: Vec<u8> = (0..blocks * size).map(|_| rng.next_u64() as u8).collect();
    for b in data.chunks_exact_mut(size) {
        for &at in f16_fields(ty) {
            let magnitude = 1e-4 * 1e3f32.powf(rng.unit());
            let sign = if rng.unit() < 0.5 { -1.0 } else { 1.0 };
            let bits = half::f16::from_f32(sign * magnitude)
                .to_bits()
                .to_le_bytes();
            b[at..at + 2].copy_from_slice(&bits);
        }
    }
    data
}

/// `len` activations: mostly in [-scale, scale] with an occasional outlier 20× larger, as real
/// hidden states have; never all zero.
pub fn random_activations(len: usize, rng: &mut Rng) -> Vec<f32> {
    let scale = 1e-2 * 1e4f32.powf(rng.unit());
    (0..len)
        .map(|_| {
            let v = scale * rng.signed();
            if rng.unit() < 0.02 { 20.0 * v } else { v }
        })
        .collect()
}

/// The dot product in f64 of the dequantized operands, and the magnitude the tolerances scale
/// with: Σ over blocks of max|w| · Σ|a| (at least Σ |w·a|, and at least every partial term of
/// the blocked integer formulas, whose scale and min parts may cancel in `w`).
pub fn reference(ty: QuantType, w: &[u8], a: &ActRow<'_>) -> (f64, f64) {
    let wv = forja_quant::dequantize(ty, w).expect("whole blocks");
    let av = a.dequantize();
    assert_eq!(wv.len(), av.len());
    let dot = wv
        .iter()
        .zip(&av)
        .map(|(&w, &a)| f64::from(w) * f64::from(a))
        .sum();
    let n = ty.block_len();
    let magnitude = wv
        .chunks(n)
        .zip(av.chunks(n))
        .map(|(w, a)| {
            let wmax = w.iter().fold(0f64, |m, &v| m.max(f64::from(v).abs()));
            wmax * a.iter().map(|&v| f64::from(v).abs()).sum::<f64>()
        })
        .sum();
    (dot, magnitude)
}

/// For `Q4_1`/`Q5_1`: Σ |m · s| over blocks. The activation's `s = d · Σ q` is stored rounded to
/// f16 (as llama.cpp stores it), so the offset term may differ from the dequantized reference by
/// up to 2⁻¹¹ of it.
pub fn offset_rounding(ty: QuantType, w: &[u8], a: &ActRow<'_>) -> f64 {
    let ActRow::Q8_1(blocks) = a else {
        return 0.0;
    };
    w.chunks_exact(ty.block_bytes())
        .zip(blocks.iter())
        .map(|(w, b)| {
            let m = half::f16::from_le_bytes([w[2], w[3]]).to_f32();
            f64::from(m).abs() * f64::from(b.s).abs() * 2f64.powi(-10)
        })
        .sum()
}
