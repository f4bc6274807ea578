//! GGUF block-quantized weights as the GPU keeps them. A GGUF block interleaves its scales with
//! its quantized values (Q8_0: a 2-byte scale, then 32 bytes), so its values are not aligned for
//! wide loads and a warp's lanes would read scattered bytes. At upload each row is split by
//! field: all blocks' quantized values first (16-byte aligned, read as `uint4`), then their
//! high bits and scales; every area starts 16 bytes after a multiple of 16 (padded with zeros),
//! and so does every row. Per row of `nb` blocks:
//!
//! | type | areas, in order |
//! |---|---|
//! | Q8_0 | `qs[nb·32]`, `d[nb]` (f16) |
//! | Q4_0 | `qs[nb·16]`, `d[nb]` |
//! | Q4_1 | `qs[nb·16]`, `(d, m)[nb]` |
//! | Q5_0 | `qs[nb·16]`, `qh[nb·4]`, `d[nb]` |
//! | Q5_1 | `qs[nb·16]`, `qh[nb·4]`, `(d, m)[nb]` |
//! | Q2_K | `qs[nb·64]`, `scales[nb·16]`, `(d, dmin)[nb]` |
//! | Q3_K | `qs[nb·64]`, `hmask[nb·32]`, `(scales[12], d)[nb]` (16 bytes a block) |
//! | Q4_K | `qs[nb·128]`, `(d, dmin, scales[12])[nb]` |
//! | Q5_K | `qs[nb·128]`, `(d, dmin, scales[12])[nb]`, `qh[nb·32]` |
//! | Q6_K | `ql[nb·128]`, `qh[nb·64]`, `scales[nb·16]`, `d[nb]` |
//!
//! Every area keeps the GGUF bytes of its field in block order, so the values' bit layout inside
//! a block is GGUF's (kernels.cu reads it so).

use crate::{KernelError, Result};

/// The GGUF block types the GPU reads as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantKind {
    Q8_0,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
}

impl QuantKind {
    /// Every type the GPU reads as stored.
    pub const ALL: [QuantKind; 10] = [
        QuantKind::Q8_0,
        QuantKind::Q4_0,
        QuantKind::Q4_1,
        QuantKind::Q5_0,
        QuantKind::Q5_1,
        QuantKind::Q2K,
        QuantKind::Q3K,
        QuantKind::Q4K,
        QuantKind::Q5K,
        QuantKind::Q6K,
    ];

    /// `(values, bytes)` of one GGUF block.
    fn block(self) -> (usize, usize) {
        match self {
            QuantKind::Q8_0 => (32, 34),
            QuantKind::Q4_0 => (32, 18),
            QuantKind::Q4_1 => (32, 20),
            QuantKind::Q5_0 => (32, 22),
            QuantKind::Q5_1 => (32, 24),
            QuantKind::Q2K => (256, 84),
            QuantKind::Q3K => (256, 110),
            QuantKind::Q4K => (256, 144),
            QuantKind::Q5K => (256, 176),
            QuantKind::Q6K => (256, 210),
        }
    }

    /// The fields of a GGUF block as `(offset, len, slot)`, in the order of the device's areas:
    /// each block's `len` bytes from `offset` take `slot` bytes of its area (`slot > len` pads
    /// each block's part with zeros: Q3_K's 12 scale bytes and its `d` as 16).
    fn fields(self) -> &'static [(usize, usize, usize)] {
        match self {
            QuantKind::Q8_0 => &[(2, 32, 32), (0, 2, 2)],
            QuantKind::Q4_0 => &[(2, 16, 16), (0, 2, 2)],
            QuantKind::Q4_1 => &[(4, 16, 16), (0, 4, 4)],
            QuantKind::Q5_0 => &[(6, 16, 16), (2, 4, 4), (0, 2, 2)],
            QuantKind::Q5_1 => &[(8, 16, 16), (4, 4, 4), (0, 4, 4)],
            QuantKind::Q2K => &[(16, 64, 64), (0, 16, 16), (80, 4, 4)],
            QuantKind::Q3K => &[(32, 64, 64), (0, 32, 32), (96, 14, 16)],
            QuantKind::Q4K => &[(16, 128, 128), (0, 16, 16)],
            QuantKind::Q5K => &[(48, 128, 128), (0, 16, 16), (16, 32, 32)],
            QuantKind::Q6K => &[(0, 128, 128), (128, 64, 64), (192, 16, 16), (208, 2, 2)],
        }
    }

    /// Bytes of a GGUF row of `cols` values (`None` unless `cols` is a multiple of the block).
    pub fn row_bytes(self, cols: usize) -> Option<usize> {
        let (values, bytes) = self.block();
        cols.is_multiple_of(values).then_some(cols / values * bytes)
    }

    /// Bytes from one device row to the next: its areas, each rounded up to 16 bytes.
    pub fn device_stride(self, cols: usize) -> Option<usize> {
        let (values, _) = self.block();
        self.row_bytes(cols)?;
        let nb = cols / values;
        Some(
            self.fields()
                .iter()
                .map(|&(_, _, slot)| (nb * slot).next_multiple_of(16))
                .sum(),
        )
    }

    /// The GEMV kernel for this type in kernels.cu — the one for a single activation row, or
    /// the one for up to eight — and the output rows each of its warps computes.
    pub fn gemv_kernel(self, one_row: bool) -> (&'static str, u32) {
        match (self, one_row) {
            (QuantKind::Q8_0, true) => ("gemv_q8_0_1", 2),
            (QuantKind::Q4_0, true) => ("gemv_q4_0_1", 2),
            (QuantKind::Q4_1, true) => ("gemv_q4_1_1", 2),
            (QuantKind::Q5_0, true) => ("gemv_q5_0_1", 2),
            (QuantKind::Q5_1, true) => ("gemv_q5_1_1", 2),
            (QuantKind::Q2K, true) => ("gemv_q2_k_1", 2),
            (QuantKind::Q3K, true) => ("gemv_q3_k_1", 2),
            (QuantKind::Q4K, true) => ("gemv_q4_k_1", 2),
            (QuantKind::Q5K, true) => ("gemv_q5_k_1", 2),
            (QuantKind::Q6K, true) => ("gemv_q6_k_1", 2),
            (QuantKind::Q8_0, false) => ("gemv_q8_0_8", 4),
            (QuantKind::Q4_0, false) => ("gemv_q4_0_8", 2),
            (QuantKind::Q4_1, false) => ("gemv_q4_1_8", 2),
            (QuantKind::Q5_0, false) => ("gemv_q5_0_8", 2),
            (QuantKind::Q5_1, false) => ("gemv_q5_1_8", 2),
            (QuantKind::Q2K, false) => ("gemv_q2_k_8", 4),
            (QuantKind::Q3K, false) => ("gemv_q3_k_8", 4),
            (QuantKind::Q4K, false) => ("gemv_q4_k_8", 2),
            (QuantKind::Q5K, false) => ("gemv_q5_k_8", 2),
            (QuantKind::Q6K, false) => ("gemv_q6_k_8", 4),
        }
    }

    /// The tensor-core kernel (mmq.cu) for a product over `rows` activation rows (at least
    /// one), and the activation rows each of its blocks computes: the narrowest tile of 8, 16,
    /// 32 or 64 rows that holds them, else 64.
    pub fn mmq_kernel(self, rows: usize) -> (&'static str, u32) {
        let names = match self {
            QuantKind::Q8_0 => ["mmq_q8_0_1", "mmq_q8_0_2", "mmq_q8_0_4", "mmq_q8_0_8"],
            QuantKind::Q4_0 => ["mmq_q4_0_1", "mmq_q4_0_2", "mmq_q4_0_4", "mmq_q4_0_8"],
            QuantKind::Q4_1 => ["mmq_q4_1_1", "mmq_q4_1_2", "mmq_q4_1_4", "mmq_q4_1_8"],
            QuantKind::Q5_0 => ["mmq_q5_0_1", "mmq_q5_0_2", "mmq_q5_0_4", "mmq_q5_0_8"],
            QuantKind::Q5_1 => ["mmq_q5_1_1", "mmq_q5_1_2", "mmq_q5_1_4", "mmq_q5_1_8"],
            QuantKind::Q2K => ["mmq_q2_k_1", "mmq_q2_k_2", "mmq_q2_k_4", "mmq_q2_k_8"],
            QuantKind::Q3K => ["mmq_q3_k_1", "mmq_q3_k_2", "mmq_q3_k_4", "mmq_q3_k_8"],
            QuantKind::Q4K => ["mmq_q4_k_1", "mmq_q4_k_2", "mmq_q4_k_4", "mmq_q4_k_8"],
            QuantKind::Q5K => ["mmq_q5_k_1", "mmq_q5_k_2", "mmq_q5_k_4", "mmq_q5_k_8"],
            QuantKind::Q6K => ["mmq_q6_k_1", "mmq_q6_k_2", "mmq_q6_k_4", "mmq_q6_k_8"],
        };
        let i = match rows {
            0..=8 => 0,
            9..=16 => 1,
            17..=32 => 2,
            _ => 3,
        };
        (names[i], 8 << i)
    }

    /// The number kernels.cu knows the type by.
    pub fn code(self) -> i32 {
        match self {
            QuantKind::Q8_0 => 0,
            QuantKind::Q4_0 => 1,
            QuantKind::Q4_1 => 2,
            QuantKind::Q4K => 3,
            QuantKind::Q6K => 4,
            QuantKind::Q5_0 => 5,
            QuantKind::Q5_1 => 6,
            QuantKind::Q5K => 7,
            QuantKind::Q3K => 8,
            QuantKind::Q2K => 9,
        }
    }
}

/// GGUF rows of `cols` values (`gguf` holds whole rows) in the device layout (module docs).
pub fn to_device(kind: QuantKind, cols: usize, gguf: &[u8]) -> Result<Vec<u8>> {
    let (rb, stride) = match (kind.row_bytes(cols), kind.device_stride(cols)) {
        (Some(rb), Some(stride)) if rb > 0 && gguf.len().is_multiple_of(rb) => (rb, stride),
        _ => {
            return Err(KernelError::Shape(format!(
                "{} bytes are not whole {kind:?} rows of {cols} values",
                gguf.len()
            )));
        }
    };
    let block = kind.block().1;
    let nb = rb / block;
    let mut out = vec![0u8; gguf.len() / rb * stride];
    for (src, dst) in gguf.chunks_exact(rb).zip(out.chunks_exact_mut(stride)) {
        let mut area = 0;
        for &(offset, len, slot) in kind.fields() {
            for (i, b) in src.chunks_exact(block).enumerate() {
                let at = area + i * slot;
                dst[at..at + len].copy_from_slice(&b[offset..offset + len]);
            }
            area += (nb * slot).next_multiple_of(16);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KINDS: [QuantKind; 10] = QuantKind::ALL;

    /// The codes kernels.cu knows the types by are distinct, as are their kernels.
    #[test]
    fn each_kind_has_its_own_code_and_kernels() {
        let codes: std::collections::HashSet<_> = KINDS.iter().map(|k| k.code()).collect();
        assert_eq!(codes.len(), KINDS.len());
        for one in [true, false] {
            let names: std::collections::HashSet<_> =
                KINDS.iter().map(|k| k.gemv_kernel(one).0).collect();
            assert_eq!(names.len(), KINDS.len());
        }
        let names: std::collections::HashSet<_> =
            KINDS.iter().map(|k| k.mmq_kernel(40).0).collect();
        assert_eq!(names.len(), KINDS.len());
    }

    #[test]
    fn the_fields_cover_each_block_once() {
        for kind in KINDS {
            let mut seen = vec![0; kind.block().1];
            for &(offset, len, slot) in kind.fields() {
                assert!(slot >= len, "{kind:?}");
                seen[offset..offset + len].iter_mut().for_each(|s| *s += 1);
            }
            assert!(seen.iter().all(|&s| s == 1), "{kind:?}: {seen:?}");
        }
    }

    /// Each byte of every block lands in its field's area, at its block's place; areas and rows
    /// start 16-byte aligned, the gaps between them zero.
    #[test]
    fn rows_are_split_by_field_and_aligned() {
        for kind in KINDS {
            let (values, block) = kind.block();
            for nb in [1usize, 3, 16] {
                let cols = nb * values;
                let rows = 3;
                let gguf: Vec<u8> = (0..rows * nb * block)
                    .map(|i| (i * 7 % 251) as u8)
                    .collect();
                let dev = to_device(kind, cols, &gguf).unwrap();
                let stride = kind.device_stride(cols).unwrap();
                let fields = kind.fields();
                let padding: usize = fields.iter().map(|f| nb * (f.2 - f.1) + 15).sum();
                assert_eq!(stride % 16, 0);
                assert!(stride >= nb * block && stride <= nb * block + padding);
                assert_eq!(dev.len(), rows * stride);
                for r in 0..rows {
                    let mut area = r * stride;
                    for &(offset, len, slot) in fields {
                        assert_eq!(area % 16, 0, "{kind:?}: area at {area}");
                        for b in 0..nb {
                            let src = r * nb * block + b * block + offset;
                            let at = area + b * slot;
                            assert_eq!(
                                dev[at..at + len],
                                gguf[src..src + len],
                                "{kind:?}, {nb} blocks, row {r}, block {b}, field at {offset}"
                            );
                            assert!(dev[at + len..at + slot].iter().all(|&p| p == 0));
                        }
                        let end = area + (nb * slot).next_multiple_of(16);
                        assert!(dev[area + nb * slot..end].iter().all(|&p| p == 0));
                        area = end;
                    }
                    assert_eq!(area, (r + 1) * stride);
                }
            }
        }
    }

    /// The narrowest tile that holds the rows, 64 past them; each kind's own kernels.
    #[test]
    fn tensor_core_tiles_hold_the_rows() {
        for kind in KINDS {
            for (rows, want) in [
                (1, 8),
                (8, 8),
                (9, 16),
                (16, 16),
                (17, 32),
                (33, 64),
                (500, 64),
            ] {
                let (name, tile) = kind.mmq_kernel(rows);
                assert_eq!(tile, want, "{kind:?}, {rows} rows");
                assert!(name.ends_with(&format!("_{}", want / 8)), "{name}");
            }
            let names: std::collections::HashSet<_> =
                [1, 9, 17, 33].map(|r| kind.mmq_kernel(r).0).into();
            assert_eq!(names.len(), 4);
        }
        assert_ne!(
            QuantKind::Q4K.mmq_kernel(4).0,
            QuantKind::Q6K.mmq_kernel(4).0
        );
    }

    #[test]
    fn partial_rows_are_refused() {
        let e = to_device(QuantKind::Q4K, 256, &[0; 145]).unwrap_err();
        assert!(e.to_string().contains("145 bytes"), "{e}");
        assert!(to_device(QuantKind::Q8_0, 48, &[0; 34]).is_err());
        assert!(to_device(QuantKind::Q6K, 0, &[]).is_err());
    }
}
