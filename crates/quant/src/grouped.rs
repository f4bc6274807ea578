//! The grouped layout: how [`crate::QMatrix`] keeps `Q4_K`, `Q5_K` and `Q6_K` blocks in memory, and the
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
//! - `Q5_K` (8 groups of 32): the registers of `Q4_K`, their low four bits in the 128 quant
//!   bytes as there; bit `m` of byte `b` of the 32 high-bit bytes is the fifth bit of byte `b`
//!   of register `m`.
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
use crate::kquants::{self, Q4K_BYTES, Q5K_BYTES, Q6K_BYTES};

/// Values per scale group of the types kept grouped; `None` for the others.
pub(crate) fn group_len(ty: QuantType) -> Option<usize> {
    match ty {
        QuantType::Q4K | QuantType::Q5K => Some(32),
        QuantType::Q6K => Some(16),
        _ => None,
    }
}

/// The value (in GGUF order) at slot `s` of the grouped order, for groups of `len`.
const fn value_at(s: usize, len: usize) -> usize {
    let (m, g, k) = (s / 32, s % 32 / 4, s % 4);
    if len == 32 {
        32 * g + 4 * m + k
    } else {
        128 * (m / 4) + 16 * g + 4 * (m % 4) + k
    }
}

/// [`value_at`] for every slot.
const fn order(len: usize) -> [u8; QK_K] {
    let mut o = [0u8; QK_K];
    let mut s = 0;
    while s < QK_K {
        o[s] = value_at(s, len) as u8;
        s += 1;
    }
    o
}

const ORDER_32: [u8; QK_K] = order(32);
const ORDER_16: [u8; QK_K] = order(16);

/// The 256 quants of a block (unsigned, as stored) in GGUF value order.
#[cfg(test)]
fn gguf_values(ty: QuantType, b: &[u8]) -> [u8; QK_K] {
    match ty {
        QuantType::Q4K => kquants::k4_values(&b[16..Q4K_BYTES], None),
        QuantType::Q5K => kquants::k4_values(&b[48..Q5K_BYTES], Some(&b[16..48])),
        _ => kquants::six_bits(&b[..128], &b[128..192]),
    }
}

/// Writes 256 quants in GGUF value order into a block's quant bytes.
fn put_gguf_values(ty: QuantType, b: &mut [u8], v: &[u8; QK_K]) {
    match ty {
        QuantType::Q4K => kquants::put_k4_values(v, &mut b[16..Q4K_BYTES], None),
        QuantType::Q5K => {
            let (head, qs) = b.split_at_mut(48);
            kquants::put_k4_values(v, &mut qs[..128], Some(&mut head[16..48]));
        }
        _ => {
            let (ql, qh) = b.split_at_mut(128);
            kquants::put_six_bits(v, ql, &mut qh[..64]);
        }
    }
}

/// The 256 quants of a grouped block, slot by slot.
fn grouped_slots(ty: QuantType, b: &[u8]) -> [u8; QK_K] {
    let mut s = [0u8; QK_K];
    for c in 0..4 {
        for byte in 0..32 {
            let (lo, hi) = (64 * c + byte, 64 * c + 32 + byte);
            if ty == QuantType::Q4K {
                let q = b[16 + 32 * c + byte];
                (s[lo], s[hi]) = (q & 0x0F, q >> 4);
            } else if ty == QuantType::Q5K {
                let (q, h) = (b[48 + 32 * c + byte], b[16 + byte]);
                s[lo] = (q & 0x0F) | ((h >> (2 * c)) & 1) << 4;
                s[hi] = (q >> 4) | ((h >> (2 * c + 1)) & 1) << 4;
            } else {
                let q = b[32 * c + byte];
                let top = b[128 + 32 * (c / 2) + byte] >> (4 * (c % 2));
                s[lo] = (q & 0x0F) | (top & 3) << 4;
                s[hi] = (q >> 4) | ((top >> 2) & 3) << 4;
            }
        }
    }
    s
}

/// Writes 256 quants slot by slot into a grouped block's quant bytes.
#[cfg(test)]
fn put_grouped_slots(ty: QuantType, b: &mut [u8], s: &[u8; QK_K]) {
    for c in 0..4 {
        for byte in 0..32 {
            let (lo, hi) = (s[64 * c + byte], s[64 * c + 32 + byte]);
            if ty == QuantType::Q4K {
                b[16 + 32 * c + byte] = lo | hi << 4;
            } else if ty == QuantType::Q5K {
                b[48 + 32 * c + byte] = (lo & 0x0F) | (hi & 0x0F) << 4;
                let bits = (lo >> 4) << (2 * c) | (hi >> 4) << (2 * c + 1);
                let keep = !(3u8 << (2 * c));
                b[16 + byte] = (b[16 + byte] & keep) | bits;
            } else {
                b[32 * c + byte] = (lo & 0x0F) | (hi & 0x0F) << 4;
                let top = (lo >> 4) | (hi >> 4) << 2;
                let at = 128 + 32 * (c / 2) + byte;
                if c % 2 == 0 {
                    b[at] = top;
                } else {
                    b[at] |= top << 4;
                }
            }
        }
    }
}

fn block_bytes(ty: QuantType) -> usize {
    match ty {
        QuantType::Q4K => Q4K_BYTES,
        QuantType::Q5K => Q5K_BYTES,
        _ => Q6K_BYTES,
    }
}

fn order_of(ty: QuantType) -> &'static [u8; QK_K] {
    if group_len(ty) == Some(32) {
        &ORDER_32
    } else {
        &ORDER_16
    }
}

/// Reorders whole GGUF blocks of a grouped type in place into the grouped layout, byte by
/// byte from where each grouped byte's bits are in GGUF order (a few instructions a byte, so
/// loading a model is not held up).
pub(crate) fn pack(ty: QuantType, data: &mut [u8]) {
    match ty {
        QuantType::Q4K => {
            for b in data.chunks_exact_mut(Q4K_BYTES) {
                pack_nibbles(&mut b[16..Q4K_BYTES]);
            }
        }
        QuantType::Q5K => {
            for b in data.chunks_exact_mut(Q5K_BYTES) {
                let (head, qs) = b.split_at_mut(48);
                pack_nibbles(qs);
                pack_fifth_bits(&mut head[16..48]);
            }
        }
        QuantType::Q6K => {
            for b in data.chunks_exact_mut(Q6K_BYTES) {
                pack_sixes(b);
            }
        }
        _ => {}
    }
}

/// The 128 bytes of four-bit values of a `Q4_K`/`Q5_K` block, GGUF order to grouped: the low
/// nibble of grouped byte `32c + 4g + k` is register `2c`'s byte `4g + k`, value
/// `32g + 8c + k`, which GGUF keeps in nibble `g % 2` of byte `32 · (g / 2) + 8c + k`; the
/// high nibble is register `2c + 1`'s, four values further.
fn pack_nibbles(q: &mut [u8]) {
    let mut src = [0u8; 128];
    src.copy_from_slice(&q[..128]);
    for c in 0..4 {
        for g in 0..8 {
            let shift = 4 * (g % 2);
            for k in 0..4 {
                let at = 32 * (g / 2) + 8 * c + k;
                let (lo, hi) = ((src[at] >> shift) & 0x0F, (src[at + 4] >> shift) & 0x0F);
                q[32 * c + 4 * g + k] = lo | hi << 4;
            }
        }
    }
}

/// The 32 fifth-bit bytes of a `Q5_K` block, GGUF order (bit `g` of byte `l`: value `32g + l`)
/// to grouped (bit `m` of byte `4g + k`: register `m`'s byte `4g + k`, value `32g + 4m + k`).
fn pack_fifth_bits(qh: &mut [u8]) {
    let mut src = [0u8; 32];
    src.copy_from_slice(&qh[..32]);
    for g in 0..8 {
        for k in 0..4 {
            qh[4 * g + k] = (0..8).fold(0u8, |byte, m| byte | ((src[4 * m + k] >> g) & 1) << m);
        }
    }
}

/// A `Q6_K` block's 192 bytes of 6-bit values, GGUF order to grouped. Grouped register `m`
/// (half `h = m / 4`, `j = m % 4`) holds value `128h + 16g + 4j + k` at byte `4g + k`; GGUF
/// keeps value `128n + 32s + l`'s low four bits in nibble `s / 2` of byte `64n + 32 · (s % 2) + l`
/// and its top two at bit `2s` of byte `128 + 32n + l`.
fn pack_sixes(b: &mut [u8]) {
    let mut src = [0u8; 192];
    src.copy_from_slice(&b[..192]);
    let (ql, qh) = src.split_at(128);
    let at = |v: usize| (v / 128, v % 128 / 32, v % 32);
    let low = |v: usize| {
        let (n, s, l) = at(v);
        (ql[64 * n + 32 * (s % 2) + l] >> (4 * (s / 2))) & 0x0F
    };
    let top = |v: usize| {
        let (n, s, l) = at(v);
        (qh[32 * n + l] >> (2 * s)) & 3
    };
    let value = |h: usize, j: usize, g: usize, k: usize| 128 * h + 16 * g + 4 * j + k;
    for c in 0..4 {
        let (h, j) = (c / 2, 2 * (c % 2));
        for g in 0..8 {
            for k in 0..4 {
                let (lo, hi) = (low(value(h, j, g, k)), low(value(h, j + 1, g, k)));
                b[32 * c + 4 * g + k] = lo | hi << 4;
            }
        }
    }
    for h in 0..2 {
        for g in 0..8 {
            for k in 0..4 {
                b[128 + 32 * h + 4 * g + k] =
                    (0..4).fold(0u8, |t, j| t | top(value(h, j, g, k)) << (2 * j));
            }
        }
    }
}

/// [`pack`] through the 256 values of each block (any grouped type): the definition the
/// byte-wise reordering is tested against.
#[cfg(test)]
fn pack_by_values(ty: QuantType, data: &mut [u8]) {
    if group_len(ty).is_none() {
        return;
    }
    let order = order_of(ty);
    for b in data.chunks_exact_mut(block_bytes(ty)) {
        let v = gguf_values(ty, b);
        let slots: [u8; QK_K] = std::array::from_fn(|s| v[usize::from(order[s])]);
        put_grouped_slots(ty, b, &slots);
    }
}

/// The inverse of [`pack`]: grouped blocks back in GGUF order, in place.
pub(crate) fn unpack(ty: QuantType, data: &mut [u8]) {
    if group_len(ty).is_none() {
        return;
    }
    let order = order_of(ty);
    for b in data.chunks_exact_mut(block_bytes(ty)) {
        let slots = grouped_slots(ty, b);
        let mut v = [0u8; QK_K];
        for (s, &i) in order.iter().enumerate() {
            v[usize::from(i)] = slots[s];
        }
        put_gguf_values(ty, b, &v);
    }
}

/// Reorders the quants of activation blocks into the grouped order for groups of `len`
/// (`bsums` stay as they are: sums per group in value order).
pub(crate) fn group_activations(blocks: &mut [BlockQ8K], len: usize) {
    let order = if len == 32 { &ORDER_32 } else { &ORDER_16 };
    for b in blocks {
        let natural = b.qs;
        for (q, &i) in b.qs.iter_mut().zip(order) {
            *q = natural[usize::from(i)];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The byte-by-byte reordering gives what the reordering through the values gives, on
    /// blocks of pseudo-random bytes (every bit pattern of the quants), and unpacks to them.
    #[test]
    fn bytewise_packing_equals_packing_by_values() {
        for ty in [QuantType::Q4K, QuantType::Q5K, QuantType::Q6K] {
            let data = crate::test_bytes(7 * block_bytes(ty), 0x9E37_79B9_7F4A_7C15);
            let (mut fast, mut slow) = (data.clone(), data.clone());
            pack(ty, &mut fast);
            pack_by_values(ty, &mut slow);
            assert!(fast == slow, "{ty}");
            unpack(ty, &mut fast);
            assert!(fast == data, "{ty}: unpack(pack(x)) != x");
        }
    }
}
