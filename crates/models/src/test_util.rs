//! Helpers the crate's unit tests share.

#![allow(clippy::unwrap_used, reason = "test code fails loudly")]

use candle_core::Tensor;

/// Largest absolute elementwise difference of two f32 tensors of one shape.
pub(crate) fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar()
        .unwrap()
}
