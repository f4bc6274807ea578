//! The grouped layout: how [`crate::QMatrix`] keeps `Q4_K` and `Q6_K` blocks in memory, and the
//! matching order of `Q8_K` activations.
//!
//! In GGUF order a 32-byte register of a block holds the values of one scale group, so every
//! register's products need their own scale multiply. The grouped layout reorders the 256 values
//! of a block so that register `m` (bytes `32m .. 32m + 32` of the reordered values) holds four
//! consecutive values of each of eight groups: byte `4g + k` is value `4m' + k` of group `g`.
//! Summing byte products four at a time (`vpdpbusd`, or `vpmaddubsw` + `vpmaddwd`) then leaves
//! each i32 lane with one group only, the registers of a block add up lane by lane, and one
//! multiply by the eight scales finishes the block.
//!
//! - `Q4_K` (8 groups of 32): register `m` holds values `32g + 4m + k`. The 128 quant bytes hold
//!   registers `2c` (low nibbles) and `2c + 1` (high nibbles) in bytes `32c .. 32c + 32`.
//! - `Q6_K` (16 groups of 16): register `m` of half `h = m / 4` holds values
//!   `128h + 16g + 4·(m % 4) + k`, so registers 0–3 cover groups 0–7 and 4–7 groups 8–15. The low
//!   nibbles of registers `2c`, `2c + 1` are the low and high nibbles of bytes `32c .. 32c + 32`
//!   (the first 128 bytes); bits `2j, 2j + 1` of bytes `128 + 32h ..` are the top two bits of
//!   register `4h + j`.
//!
//! Scales, mins and the f16 factors keep their GGUF places, so only the quant bytes move; the
//! activation blocks' `bsums` stay in value order.

use crate::activation::BlockQ8K;
use crate::format::{QK_K, QuantType};
use crate::kquants::{Q4K_BYTES, Q6K_BYTES};

/// Values per scale group of the types kept grouped; `None` for the others.
pub(crate) fn group_len(ty: QuantType) -> Option<usize> {
    match ty {
        QuantType::Q4K => Some(32),
        QuantType::Q6K => Some(16),
        _ => None,
    }
}

/// The value (in GGUF order) at slot `s` of the grouped order, for groups of `len`.
#[inline(always)]
fn value_at(s: usize, len: usize) -> usize {
    let (m, g, k) = (s / 32, s % 32 / 4, s % 4);
    if len == 32 {
        32 * g + 4 * m + k
    } else {
        128 * (m / 4) + 16 * g + 4 * (m % 4) + k
    }
}

/// Quant `i` (unsigned, as stored) of a GGUF `Q4_K` block.
fn q4k_get(b: &[u8], i: usize) -> u8 {
    let byte = b[16 + 32 * (i / 64) + i % 32];
    if i % 64 < 32 { byte & 0x0F } else { byte >> 4 }
}

/// Quant `i` (unsigned 6 bits, as stored) of a GGUF `Q6_K` block.
fn q6k_get(b: &[u8], i: usize) -> u8 {
    let (h, c) = (i / 128, i % 128);
    let (k, l) = (c / 32, c % 32);
    let low = (b[64 * h + 32 * (k % 2) + l] >> (4 * (k / 2))) & 0x0F;
    let high = (b[128 + 32 * h + l] >> (2 * k)) & 3;
    low | high << 4
}

/// Writes the quant of slot `s` into a grouped block (whose quant bytes started zeroed).
fn put_grouped(ty: QuantType, b: &mut [u8], s: usize, u: u8) {
    let (m, byte) = (s / 32, s % 32);
    match ty {
        QuantType::Q4K => b[16 + 32 * (m / 2) + byte] |= (u & 0x0F) << (4 * (m % 2)),
        _ => {
            b[32 * (m / 2) + byte] |= (u & 0x0F) << (4 * (m % 2));
            b[128 + 32 * (m / 4) + byte] |= (u >> 4) << (2 * (m % 4));
        }
    }
}

/// The quant of slot `s` of a grouped block.
fn get_grouped(ty: QuantType, b: &[u8], s: usize) -> u8 {
    let (m, byte) = (s / 32, s % 32);
    match ty {
        QuantType::Q4K => (b[16 + 32 * (m / 2) + byte] >> (4 * (m % 2))) & 0x0F,
        _ => {
            let low = (b[32 * (m / 2) + byte] >> (4 * (m % 2))) & 0x0F;
            let high = (b[128 + 32 * (m / 4) + byte] >> (2 * (m % 4))) & 3;
            low | high << 4
        }
    }
}

/// Writes quant `i` into a GGUF block (whose quant bytes started zeroed).
fn put_gguf(ty: QuantType, b: &mut [u8], i: usize, u: u8) {
    match ty {
        QuantType::Q4K => b[16 + 32 * (i / 64) + i % 32] |= (u & 0x0F) << (4 * (i % 64 / 32)),
        _ => {
            let (h, c) = (i / 128, i % 128);
            let (k, l) = (c / 32, c % 32);
            b[64 * h + 32 * (k % 2) + l] |= (u & 0x0F) << (4 * (k / 2));
            b[128 + 32 * h + l] |= (u >> 4) << (2 * k);
        }
    }
}

/// The byte range of a block's quants (what the two layouts order differently).
fn quant_bytes(ty: QuantType) -> std::ops::Range<usize> {
    if ty == QuantType::Q4K {
        16..Q4K_BYTES
    } else {
        0..192
    }
}

fn block_bytes(ty: QuantType) -> usize {
    if ty == QuantType::Q4K {
        Q4K_BYTES
    } else {
        Q6K_BYTES
    }
}

/// Reorders whole GGUF blocks of a grouped type in place into the grouped layout.
pub(crate) fn pack(ty: QuantType, data: &mut [u8]) {
    let Some(len) = group_len(ty) else { return };
    let size = block_bytes(ty);
    let mut src = [0u8; Q6K_BYTES];
    for b in data.chunks_exact_mut(size) {
        src[..size].copy_from_slice(b);
        b[quant_bytes(ty)].fill(0);
        for s in 0..QK_K {
            let i = value_at(s, len);
            let u = if ty == QuantType::Q4K {
                q4k_get(&src, i)
            } else {
                q6k_get(&src, i)
            };
            put_grouped(ty, b, s, u);
        }
    }
}

/// The inverse of [`pack`]: grouped blocks back in GGUF order, in place.
pub(crate) fn unpack(ty: QuantType, data: &mut [u8]) {
    let Some(len) = group_len(ty) else { return };
    let size = block_bytes(ty);
    let mut src = [0u8; Q6K_BYTES];
    for b in data.chunks_exact_mut(size) {
        src[..size].copy_from_slice(b);
        b[quant_bytes(ty)].fill(0);
        for s in 0..QK_K {
            put_gguf(ty, b, value_at(s, len), get_grouped(ty, &src, s));
        }
    }
}

/// Reorders the quants of activation blocks into the grouped order for groups of `len`
/// (`bsums` stay as they are: sums per group in value order).
pub(crate) fn group_activations(blocks: &mut [BlockQ8K], len: usize) {
    for b in blocks {
        let natural = b.qs;
        for (s, q) in b.qs.iter_mut().enumerate() {
            *q = natural[value_at(s, len)];
        }
    }
}
