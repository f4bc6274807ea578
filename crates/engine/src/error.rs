//! The one error type of the engine.

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Model(#[from] forja_models::ModelError),

    #[error("tensor computation failed: {0}")]
    Candle(#[from] candle_core::Error),

    #[error("tokenizer of {origin}: {what}")]
    Tokenizer { origin: String, what: String },

    #[error("chat template of {origin}: {what}")]
    Template { origin: String, what: String },

    #[error("invalid sampling parameters: {0}")]
    Sampling(String),

    #[error("{0}")]
    Input(String),

    /// The model failed on work that was valid (reported to every request it fails).
    #[error("the model failed: {0}")]
    Failed(String),
}

pub type Result<T> = std::result::Result<T, EngineError>;
