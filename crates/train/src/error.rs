//! The one error type of the training crate.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Model(#[from] forja_models::ModelError),

    #[error(transparent)]
    Engine(#[from] forja_engine::EngineError),

    #[error("tensor computation failed: {0}")]
    Candle(#[from] candle_core::Error),

    #[error("{path}: {what}")]
    Io { path: PathBuf, what: String },

    /// A record of a dataset that cannot be used; `at` is "line N" (JSONL) or "record N" (JSON).
    #[error("{path}, {at}: {what}")]
    Dataset {
        path: PathBuf,
        at: String,
        what: String,
    },

    #[error("adapter {path}: {what}")]
    Adapter { path: PathBuf, what: String },

    #[error("invalid training settings: {0}")]
    Config(String),

    /// A plot that could not be encoded as an image.
    #[error("plot: {0}")]
    Plot(String),
}

impl TrainError {
    pub(crate) fn io(path: &std::path::Path, e: impl std::fmt::Display) -> Self {
        TrainError::Io {
            path: path.to_path_buf(),
            what: e.to_string(),
        }
    }
}

pub type Result<T> = std::result::Result<T, TrainError>;
