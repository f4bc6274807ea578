//! Reference dequantization of any stored row to f32: the obviously-correct path every kernel
//! is checked against, and the way weights become dense when a model runs unquantized.

use crate::error::{QuantError, Result};
use crate::format::QuantType;
use crate::{float, kquants, legacy};

/// Writes the values of `bytes` (whole blocks of `ty`) to `out`, which must hold exactly as many
/// values as the blocks do.
pub fn dequantize_row(ty: QuantType, bytes: &[u8], out: &mut [f32]) -> Result<()> {
    let (len, size) = (ty.block_len(), ty.block_bytes());
    if !bytes.len().is_multiple_of(size) || bytes.len() / size * len != out.len() {
        return Err(QuantError::Shape(format!(
            "{} bytes of {ty} blocks ({size} bytes per {len} values) into {} values",
            bytes.len(),
            out.len()
        )));
    }
    let one: fn(&[u8], &mut [f32]) = match ty {
        QuantType::F32 => |b, o| o[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        QuantType::F16 => |b, o| o[0] = float::half_at::<false>(b, 0),
        QuantType::BF16 => |b, o| o[0] = float::half_at::<true>(b, 0),
        QuantType::Q4_0 => legacy::dequant_q4_0,
        QuantType::Q4_1 => legacy::dequant_q4_1,
        QuantType::Q5_0 => legacy::dequant_q5_0,
        QuantType::Q5_1 => legacy::dequant_q5_1,
        QuantType::Q8_0 => legacy::dequant_q8_0,
        QuantType::Q2K => kquants::dequant_q2k,
        QuantType::Q3K => kquants::dequant_q3k,
        QuantType::Q4K => kquants::dequant_q4k,
        QuantType::Q5K => kquants::dequant_q5k,
        QuantType::Q6K => kquants::dequant_q6k,
    };
    for (b, o) in bytes.chunks_exact(size).zip(out.chunks_exact_mut(len)) {
        one(b, o);
    }
    Ok(())
}

/// The values of `bytes` (whole blocks of `ty`) as a new vector.
pub fn dequantize(ty: QuantType, bytes: &[u8]) -> Result<Vec<f32>> {
    let mut out = vec![0f32; bytes.len() / ty.block_bytes() * ty.block_len()];
    dequantize_row(ty, bytes, &mut out)?;
    Ok(out)
}
