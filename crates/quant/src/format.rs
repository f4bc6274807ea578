//! The GGUF storage types of a weight row and the 8-bit activation types they multiply with.

use crate::error::{QuantError, Result};

/// Elements in a block of the legacy formats (`Q4_0` … `Q8_1`).
pub const QK: usize = 32;
/// Elements in a super-block of the k-quants (`Q2_K` … `Q8_K`).
pub const QK_K: usize = 256;

/// How a row of weights is stored: a GGUF tensor type. Rows are a whole number of blocks; a
/// block holds [`QuantType::block_len`] values in [`QuantType::block_bytes`] bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuantType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
}

/// The 8-bit blocks an activation row is quantized to before a dot product with a weight row.
/// The pairing follows llama.cpp's CPU backend, so both round activations the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActivationType {
    /// 32 values, one scale: pairs with `Q4_0`, `Q5_0`, `Q8_0`.
    Q8_0,
    /// 32 values, scale and scale × sum: pairs with `Q4_1`, `Q5_1` (whose offset needs the sum).
    Q8_1,
    /// 256 values, an f32 scale and sums of each 16: pairs with the k-quants.
    Q8K,
}

impl QuantType {
    /// Every type, in GGUF id order.
    pub const ALL: [QuantType; 13] = [
        QuantType::F32,
        QuantType::F16,
        QuantType::Q4_0,
        QuantType::Q4_1,
        QuantType::Q5_0,
        QuantType::Q5_1,
        QuantType::Q8_0,
        QuantType::Q2K,
        QuantType::Q3K,
        QuantType::Q4K,
        QuantType::Q5K,
        QuantType::Q6K,
        QuantType::BF16,
    ];

    /// The type of a GGUF `ggml_type` id; `None` for ids this crate does not store weights in.
    pub fn from_gguf_id(id: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.gguf_id() == id)
    }

    /// The `ggml_type` id GGUF files use for this type.
    pub fn gguf_id(self) -> u32 {
        match self {
            QuantType::F32 => 0,
            QuantType::F16 => 1,
            QuantType::Q4_0 => 2,
            QuantType::Q4_1 => 3,
            QuantType::Q5_0 => 6,
            QuantType::Q5_1 => 7,
            QuantType::Q8_0 => 8,
            QuantType::Q2K => 10,
            QuantType::Q3K => 11,
            QuantType::Q4K => 12,
            QuantType::Q5K => 13,
            QuantType::Q6K => 14,
            QuantType::BF16 => 30,
        }
    }

    /// The name llama.cpp prints (`Q4_K`, `F16`).
    pub fn name(self) -> &'static str {
        match self {
            QuantType::F32 => "F32",
            QuantType::F16 => "F16",
            QuantType::BF16 => "BF16",
            QuantType::Q4_0 => "Q4_0",
            QuantType::Q4_1 => "Q4_1",
            QuantType::Q5_0 => "Q5_0",
            QuantType::Q5_1 => "Q5_1",
            QuantType::Q8_0 => "Q8_0",
            QuantType::Q2K => "Q2_K",
            QuantType::Q3K => "Q3_K",
            QuantType::Q4K => "Q4_K",
            QuantType::Q5K => "Q5_K",
            QuantType::Q6K => "Q6_K",
        }
    }

    /// Values per block.
    pub fn block_len(self) -> usize {
        match self {
            QuantType::F32 | QuantType::F16 | QuantType::BF16 => 1,
            QuantType::Q4_0
            | QuantType::Q4_1
            | QuantType::Q5_0
            | QuantType::Q5_1
            | QuantType::Q8_0 => QK,
            QuantType::Q2K | QuantType::Q3K | QuantType::Q4K | QuantType::Q5K | QuantType::Q6K => {
                QK_K
            }
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            QuantType::F32 => 4,
            QuantType::F16 | QuantType::BF16 => 2,
            QuantType::Q4_0 => 2 + QK / 2,
            QuantType::Q4_1 => 4 + QK / 2,
            QuantType::Q5_0 => 2 + 4 + QK / 2,
            QuantType::Q5_1 => 4 + 4 + QK / 2,
            QuantType::Q8_0 => 2 + QK,
            QuantType::Q2K => QK_K / 16 + QK_K / 4 + 4,
            QuantType::Q3K => QK_K / 8 + QK_K / 4 + 12 + 2,
            QuantType::Q4K => 4 + 12 + QK_K / 2,
            QuantType::Q5K => 4 + 12 + QK_K / 8 + QK_K / 2,
            QuantType::Q6K => QK_K / 2 + QK_K / 4 + QK_K / 16 + 2,
        }
    }

    /// Bytes of a row of `cols` values; an error unless `cols` is a whole number of blocks.
    pub fn row_bytes(self, cols: usize) -> Result<usize> {
        if !cols.is_multiple_of(self.block_len()) {
            return Err(QuantError::Shape(format!(
                "{} rows hold whole blocks of {} values; {cols} columns is not a multiple",
                self.name(),
                self.block_len()
            )));
        }
        Ok(cols / self.block_len() * self.block_bytes())
    }

    /// The activation blocks this type's dot product takes; `None` for the float types, which
    /// have no quantized dot product here.
    pub fn activation(self) -> Option<ActivationType> {
        match self {
            QuantType::F32 | QuantType::F16 | QuantType::BF16 => None,
            QuantType::Q4_0 | QuantType::Q5_0 | QuantType::Q8_0 => Some(ActivationType::Q8_0),
            QuantType::Q4_1 | QuantType::Q5_1 => Some(ActivationType::Q8_1),
            QuantType::Q2K | QuantType::Q3K | QuantType::Q4K | QuantType::Q5K | QuantType::Q6K => {
                Some(ActivationType::Q8K)
            }
        }
    }
}

impl ActivationType {
    /// Values per block (equal to the block length of every weight type it pairs with).
    pub fn block_len(self) -> usize {
        match self {
            ActivationType::Q8_0 | ActivationType::Q8_1 => QK,
            ActivationType::Q8K => QK_K,
        }
    }
}

impl std::fmt::Display for QuantType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
