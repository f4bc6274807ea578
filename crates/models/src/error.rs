//! The one error type of the models crate.

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Arch(#[from] forja_arch::ArchError),

    #[error("tensor computation failed: {0}")]
    Candle(#[from] candle_core::Error),

    #[error("cannot read weights from {path}: {what}")]
    Weights { path: String, what: String },

    #[error("weight {name:?} is missing from {source_desc}")]
    MissingWeight { name: String, source_desc: String },

    #[error("weight {name:?} has shape {found:?}, expected {expected:?}")]
    Shape {
        name: String,
        found: Vec<usize>,
        expected: Vec<usize>,
    },

    #[error("{0} is not supported yet")]
    Unsupported(String),

    #[error("invalid input: {0}")]
    Input(String),

    /// A LoRA adapter that does not fit the model (a module it lacks, a shape that differs).
    #[error("{0}")]
    Adapter(String),
}

pub type Result<T> = std::result::Result<T, ModelError>;
