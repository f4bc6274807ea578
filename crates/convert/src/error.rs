//! The one error type of the converter; every variant says what and where.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("{}: {what}", path.display())]
    Input { path: PathBuf, what: String },

    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("{0}")]
    Arch(#[from] forja_arch::ArchError),

    #[error("tensor {tensor:?}: {what}")]
    Tensor { tensor: String, what: String },

    #[error("{0}")]
    Unsupported(String),
}

pub type Result<T, E = ConvertError> = std::result::Result<T, E>;

pub(crate) fn input(path: &std::path::Path, what: impl Into<String>) -> ConvertError {
    ConvertError::Input {
        path: path.to_path_buf(),
        what: what.into(),
    }
}
