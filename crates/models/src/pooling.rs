//! Sentence vectors from an encoder's token vectors: the pooling modes of sentence-transformers
//! (`models/Pooling.py`) and L2 normalization. Padding never takes part: each row is pooled over
//! its own tokens only.

use candle_core::{D, Tensor};
use forja_arch::Pooling;

use crate::error::{ModelError, Result};

/// Pools `hidden` `[batch, seq, hidden]`, whose row `i` holds `lens[i]` tokens followed by
/// padding, into `[batch, hidden]`.
pub fn pool(hidden: &Tensor, lens: &[usize], pooling: Pooling) -> Result<Tensor> {
    let (batch, seq, _) = hidden.dims3()?;
    if lens.len() != batch {
        return Err(ModelError::Input(format!(
            "{} lengths for a batch of {batch}",
            lens.len()
        )));
    }
    let mut rows = Vec::with_capacity(batch);
    for (i, &len) in lens.iter().enumerate() {
        if len == 0 || len > seq {
            return Err(ModelError::Input(format!(
                "row {i} has {len} tokens in a batch {seq} wide"
            )));
        }
        // [len, hidden]
        let tokens = hidden.get(i)?.narrow(0, 0, len)?;
        rows.push(match pooling {
            Pooling::Cls => tokens.get(0)?,
            Pooling::LastToken => tokens.get(len - 1)?,
            Pooling::Mean => (tokens.sum(0)? / len as f64)?,
            Pooling::MeanSqrtLen => (tokens.sum(0)? / (len as f64).sqrt())?,
            Pooling::Max => tokens.max(0)?,
        });
    }
    Ok(Tensor::stack(&rows, 0)?)
}

/// Scales each row of `x` `[batch, hidden]` to unit L2 norm (rows of norm below 1e-12 are divided
/// by 1e-12 instead, as `torch.nn.functional.normalize` does).
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norms = x
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12, f64::MAX)?;
    Ok(x.broadcast_div(&norms)?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code fails loudly")]

    use candle_core::Device;

    use super::*;

    /// Two rows: [[1,2],[3,4],[pad]] with 2 tokens and [[5,-6],[-7,8],[9,1]] with 3.
    fn batch() -> Tensor {
        let v = [1.0f32, 2., 3., 4., 100., 100., 5., -6., -7., 8., 9., 1.];
        Tensor::from_slice(&v, (2, 3, 2), &Device::Cpu).unwrap()
    }

    fn rows(t: &Tensor) -> Vec<Vec<f32>> {
        t.to_vec2().unwrap()
    }

    #[test]
    fn each_mode_ignores_padding() {
        let h = batch();
        let lens = [2, 3];
        let cases: [(Pooling, [[f32; 2]; 2]); 5] = [
            (Pooling::Cls, [[1., 2.], [5., -6.]]),
            (Pooling::LastToken, [[3., 4.], [9., 1.]]),
            (Pooling::Mean, [[2., 3.], [7. / 3., 1.]]),
            (
                Pooling::MeanSqrtLen,
                [
                    [4. / 2f32.sqrt(), 6. / 2f32.sqrt()],
                    [7. / 3f32.sqrt(), 3. / 3f32.sqrt()],
                ],
            ),
            (Pooling::Max, [[3., 4.], [9., 8.]]),
        ];
        for (mode, want) in cases {
            let got = rows(&pool(&h, &lens, mode).unwrap());
            for (g, w) in got.iter().zip(want) {
                for (a, b) in g.iter().zip(w) {
                    assert!((a - b).abs() < 1e-6, "{mode:?}: {got:?} vs {want:?}");
                }
            }
        }
    }

    #[test]
    fn normalized_rows_have_unit_norm_and_zero_stays_zero() {
        let x = Tensor::from_slice(&[3.0f32, 4., 0., 0.], (2, 2), &Device::Cpu).unwrap();
        assert_eq!(rows(&l2_normalize(&x).unwrap()), [[0.6, 0.8], [0., 0.]]);
    }

    #[test]
    fn bad_lengths_are_errors() {
        let h = batch();
        assert!(pool(&h, &[2], Pooling::Mean).is_err());
        assert!(pool(&h, &[0, 3], Pooling::Mean).is_err());
        assert!(pool(&h, &[2, 4], Pooling::Mean).is_err());
    }
}
