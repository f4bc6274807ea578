//! Activation rows quantized to 8-bit blocks, the right-hand operand of every quantized dot
//! product. Rounding mirrors llama.cpp's x86 CPU backend (scale = max|x| / 127 stored at f16
//! precision, values rounded half to even; `Q8_K` keeps an f32 scale and maps the signed
//! extreme to -127), so forja's and llama.cpp's outputs round alike.

use half::f16;

use crate::dot::Isa;
use crate::error::{QuantError, Result};
use crate::format::{ActivationType, QK, QK_K};
use crate::pool::Pool;

/// 32 activations: `x ≈ d · qs`, and `sum = Σ qs` (for the offsets of interleaved `Q4_0`,
/// `Q5_0` and `Q8_0` weights). `d` is f32 holding an f16-representable value.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[repr(C)]
pub struct BlockQ8_0 {
    pub d: f32,
    pub qs: [i8; QK],
    pub sum: i32,
}

/// 32 activations: `x ≈ d · qs`, and `s = d · Σ qs` for the offset of `Q4_1`/`Q5_1` weights.
/// `d` and `s` are f32 holding f16-representable values.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[repr(C)]
pub struct BlockQ8_1 {
    pub d: f32,
    pub s: f32,
    pub qs: [i8; QK],
}

/// 256 activations: `x ≈ d · qs`, with `bsums[g] = Σ qs[16g..16g + 16]` for the k-quants' mins
/// and offsets.
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C)]
pub struct BlockQ8K {
    pub d: f32,
    pub qs: [i8; QK_K],
    pub bsums: [i16; QK_K / 16],
}

impl Default for BlockQ8K {
    fn default() -> Self {
        BlockQ8K {
            d: 0.0,
            qs: [0; QK_K],
            bsums: [0; QK_K / 16],
        }
    }
}

/// One quantized activation row, borrowed.
#[derive(Debug, Clone, Copy)]
pub enum ActRow<'a> {
    Q8_0(&'a [BlockQ8_0]),
    Q8_1(&'a [BlockQ8_1]),
    Q8K(&'a [BlockQ8K]),
}

impl ActRow<'_> {
    pub fn activation_type(&self) -> ActivationType {
        match self {
            ActRow::Q8_0(_) => ActivationType::Q8_0,
            ActRow::Q8_1(_) => ActivationType::Q8_1,
            ActRow::Q8K(_) => ActivationType::Q8K,
        }
    }

    /// Blocks in the row.
    pub fn num_blocks(&self) -> usize {
        match self {
            ActRow::Q8_0(b) => b.len(),
            ActRow::Q8_1(b) => b.len(),
            ActRow::Q8K(b) => b.len(),
        }
    }

    /// The values the blocks stand for (`d · qs`), for references and tests.
    pub fn dequantize(&self) -> Vec<f32> {
        match self {
            ActRow::Q8_0(b) => b
                .iter()
                .flat_map(|b| b.qs.map(|q| b.d * f32::from(q)))
                .collect(),
            ActRow::Q8_1(b) => b
                .iter()
                .flat_map(|b| b.qs.map(|q| b.d * f32::from(q)))
                .collect(),
            ActRow::Q8K(b) => b
                .iter()
                .flat_map(|b| b.qs.map(|q| b.d * f32::from(q)))
                .collect(),
        }
    }
}

#[inline(always)]
fn abs_max(x: &[f32]) -> f32 {
    x.iter().fold(0f32, |m, v| m.max(v.abs()))
}

/// `v` rounded to the nearest integer, ties to even, for |v| < 2²²: adding 1.5 · 2²³ leaves the
/// integer in the low mantissa bits (ggml's `nearest_int`). Plain arithmetic, so loops of it
/// vectorize (`round_ties_even` is a libm call on baseline x86-64).
#[inline(always)]
fn nearest(v: f32) -> i32 {
    ((v + 12_582_912.0).to_bits() as i32 & 0x007F_FFFF) - 0x0040_0000
}

/// Rounds `x · id` into `qs` (|x · id| ≤ 127 up to one rounding, so the values fit); returns
/// Σ qs.
#[inline(always)]
fn round_into(x: &[f32], id: f32, qs: &mut [i8]) -> i32 {
    for (q, v) in qs.iter_mut().zip(x) {
        *q = nearest(v * id) as i8;
    }
    qs.iter().map(|&q| i32::from(q)).sum()
}

#[inline(always)]
fn q8_0_block(x: &[f32], b: &mut BlockQ8_0) {
    let amax = abs_max(x);
    let id = if amax > 0.0 { 127.0 / amax } else { 0.0 };
    b.d = f16::from_f32(amax / 127.0).to_f32();
    b.sum = round_into(x, id, &mut b.qs);
}

#[inline(always)]
fn q8_1_block(x: &[f32], b: &mut BlockQ8_1) {
    let amax = abs_max(x);
    let id = if amax > 0.0 { 127.0 / amax } else { 0.0 };
    let d = amax / 127.0;
    b.d = f16::from_f32(d).to_f32();
    let sum = round_into(x, id, &mut b.qs);
    b.s = f16::from_f32(d * sum as f32).to_f32();
}

#[inline(always)]
fn q8k_block(x: &[f32], b: &mut BlockQ8K) {
    let amax = abs_max(x);
    // The first value of largest magnitude, with its sign, maps to -127 (its opposite would
    // map to 127).
    let Some(&extreme) = x.iter().find(|v| v.abs() == amax).filter(|_| amax > 0.0) else {
        *b = BlockQ8K::default();
        return;
    };
    let iscale = -127.0 / extreme;
    for (q, v) in b.qs.iter_mut().zip(x) {
        *q = nearest(iscale * v).min(127) as i8;
    }
    for (s, g) in b.bsums.iter_mut().zip(b.qs.chunks_exact(16)) {
        *s = g.iter().map(|&q| i16::from(q)).sum();
    }
    b.d = 1.0 / iscale;
}

/// Quantizes consecutive blocks with `one`.
#[inline(always)]
fn blocks<B>(x: &[f32], out: &mut [B], block_len: usize, one: impl Fn(&[f32], &mut B)) {
    out.iter_mut()
        .zip(x.chunks_exact(block_len))
        .for_each(|(b, x)| one(x, b));
}

/// [`blocks`] compiled for AVX2: the same operations (no fused multiply-adds), so the same
/// results, 8 lanes at a time.
///
/// # Safety
/// The CPU has AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn blocks_avx2<B>(x: &[f32], out: &mut [B], block_len: usize, one: impl Fn(&[f32], &mut B)) {
    blocks(x, out, block_len, one);
}

/// Quantizes with the code compiled for `isa` (which the caller checked is available).
fn quantize_blocks<B>(
    isa: Isa,
    x: &[f32],
    out: &mut [B],
    block_len: usize,
    one: impl Fn(&[f32], &mut B),
) {
    #[cfg(target_arch = "x86_64")]
    if matches!(
        isa,
        Isa::Avx2 | Isa::Avx512 | Isa::Avx512Vnni | Isa::AvxVnni
    ) {
        // SAFETY: the callers pass only instruction sets `Isa::is_available` confirmed.
        unsafe { blocks_avx2(x, out, block_len, one) };
        return;
    }
    let _ = isa;
    blocks(x, out, block_len, one);
}

fn check(x: &[f32], blocks: usize, block_len: usize) -> Result<()> {
    if x.len() != blocks * block_len {
        return Err(QuantError::Shape(format!(
            "{} activations do not fill {blocks} blocks of {block_len}",
            x.len()
        )));
    }
    Ok(())
}

/// Quantizes `x` (a whole number of 32-blocks) into `out`.
pub fn quantize_q8_0(x: &[f32], out: &mut [BlockQ8_0]) -> Result<()> {
    check(x, out.len(), QK)?;
    quantize_blocks(Isa::best(), x, out, QK, q8_0_block);
    Ok(())
}

/// Quantizes `x` (a whole number of 32-blocks) into `out`.
pub fn quantize_q8_1(x: &[f32], out: &mut [BlockQ8_1]) -> Result<()> {
    check(x, out.len(), QK)?;
    quantize_blocks(Isa::best(), x, out, QK, q8_1_block);
    Ok(())
}

/// Quantizes `x` (a whole number of 256-blocks) into `out`.
pub fn quantize_q8k(x: &[f32], out: &mut [BlockQ8K]) -> Result<()> {
    check(x, out.len(), QK_K)?;
    quantize_blocks(Isa::best(), x, out, QK_K, q8k_block);
    Ok(())
}

/// Values above which quantizing a matrix of activations is split across threads.
const PARALLEL_VALUES: usize = 1 << 15;

/// A matrix of activation rows quantized for one activation type. Its buffers are kept between
/// uses so that quantizing the next matrix allocates nothing once they are large enough.
#[derive(Debug, Default)]
pub struct QuantizedActivations {
    ty: Option<ActivationType>,
    rows: usize,
    blocks_per_row: usize,
    q8_0: Vec<BlockQ8_0>,
    q8_1: Vec<BlockQ8_1>,
    q8k: Vec<BlockQ8K>,
}

fn fill<B: Send + Default + Clone>(
    isa: Isa,
    buf: &mut Vec<B>,
    x: &[f32],
    blocks: usize,
    block_len: usize,
    one: impl Fn(&[f32], &mut B) + Sync + Copy,
) {
    buf.resize(blocks, B::default());
    let buf = &mut buf[..blocks];
    if x.len() < PARALLEL_VALUES {
        quantize_blocks(isa, x, buf, block_len, one);
        return;
    }
    let per_task = (PARALLEL_VALUES / block_len).max(1);
    let out = SharedOut(buf.as_mut_ptr());
    Pool::global().run(blocks.div_ceil(per_task), &|task| {
        let start = task * per_task;
        let end = (start + per_task).min(blocks);
        // SAFETY: tasks cover disjoint ranges `start..end` of `buf` (`end ≤ blocks`, its
        // length), which outlives `run`.
        let out = unsafe { std::slice::from_raw_parts_mut(out.at(start), end - start) };
        quantize_blocks(
            isa,
            &x[start * block_len..end * block_len],
            out,
            block_len,
            one,
        );
    });
}

/// The quantized blocks the tasks of one [`fill`] write, each its own range.
struct SharedOut<B>(*mut B);

impl<B> SharedOut<B> {
    /// # Safety
    /// `i` is within the buffer the pointer came from.
    unsafe fn at(&self, i: usize) -> *mut B {
        // SAFETY: the caller's contract.
        unsafe { self.0.add(i) }
    }
}

// SAFETY: the tasks of a `fill` write disjoint ranges, and `fill` outlives them.
unsafe impl<B: Send> Sync for SharedOut<B> {}

impl QuantizedActivations {
    pub fn new() -> Self {
        Self::default()
    }

    /// Quantizes `x`, `rows` rows of `cols` values (row-major), to `ty` blocks.
    pub fn quantize(
        &mut self,
        ty: ActivationType,
        x: &[f32],
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        self.quantize_with(Isa::best(), ty, x, rows, cols)
    }

    /// [`QuantizedActivations::quantize`] with the code compiled for `isa` (the results are the
    /// same on every instruction set; an error if this CPU lacks it).
    pub fn quantize_with(
        &mut self,
        isa: Isa,
        ty: ActivationType,
        x: &[f32],
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        isa.check()?;
        let block_len = ty.block_len();
        if !cols.is_multiple_of(block_len) || x.len() != rows * cols {
            return Err(QuantError::Shape(format!(
                "{} activations as {rows} rows of {cols} in blocks of {block_len}",
                x.len()
            )));
        }
        let blocks = rows * cols / block_len;
        match ty {
            ActivationType::Q8_0 => fill(isa, &mut self.q8_0, x, blocks, block_len, q8_0_block),
            ActivationType::Q8_1 => fill(isa, &mut self.q8_1, x, blocks, block_len, q8_1_block),
            ActivationType::Q8K => fill(isa, &mut self.q8k, x, blocks, block_len, q8k_block),
        }
        self.ty = Some(ty);
        self.rows = rows;
        self.blocks_per_row = cols / block_len;
        Ok(())
    }

    /// Rows quantized by the last [`QuantizedActivations::quantize`].
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Row `i` of the last quantized matrix; `None` past the end or before any quantization.
    pub fn row(&self, i: usize) -> Option<ActRow<'_>> {
        if i >= self.rows {
            return None;
        }
        let r = i * self.blocks_per_row..(i + 1) * self.blocks_per_row;
        Some(match self.ty? {
            ActivationType::Q8_0 => ActRow::Q8_0(&self.q8_0[r]),
            ActivationType::Q8_1 => ActRow::Q8_1(&self.q8_1[r]),
            ActivationType::Q8K => ActRow::Q8K(&self.q8k[r]),
        })
    }

    pub(crate) fn q8_0_rows(&self) -> &[BlockQ8_0] {
        self.q8_0
            .get(..self.rows * self.blocks_per_row)
            .unwrap_or_default()
    }

    pub(crate) fn q8_1_rows(&self) -> &[BlockQ8_1] {
        self.q8_1
            .get(..self.rows * self.blocks_per_row)
            .unwrap_or_default()
    }

    /// Reorders the `Q8_K` rows' quants into the grouped order for groups of `len`
    /// (`crate::grouped`).
    pub(crate) fn group_q8k(&mut self, len: usize) {
        let n = self.rows * self.blocks_per_row;
        if let Some(blocks) = self.q8k.get_mut(..n) {
            crate::grouped::group_activations(blocks, len);
        }
    }

    pub(crate) fn q8k_rows(&self) -> &[BlockQ8K] {
        self.q8k
            .get(..self.rows * self.blocks_per_row)
            .unwrap_or_default()
    }
}
