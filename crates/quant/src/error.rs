//! The one error type of the quant crate.

#[derive(Debug, thiserror::Error)]
pub enum QuantError {
    /// Sizes that do not fit together (columns not a whole number of blocks, a buffer of the
    /// wrong length, mismatched operands).
    #[error("quantized shapes do not fit: {0}")]
    Shape(String),

    /// A weight type with no quantized dot product, or an instruction set this CPU lacks.
    #[error("{0} is not supported")]
    Unsupported(String),
}

pub type Result<T> = std::result::Result<T, QuantError>;
