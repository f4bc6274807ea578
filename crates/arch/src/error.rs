//! The one error type of this crate. Every variant names what was being read and where.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ArchError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("malformed GGUF{}: {what} (at byte {offset})", path.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default())]
    Gguf {
        path: Option<PathBuf>,
        offset: u64,
        what: String,
    },

    #[error("malformed safetensors {}: {what}", path.display())]
    Safetensors { path: PathBuf, what: String },

    #[error("invalid model config{}: {what}", path.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default())]
    Config { path: Option<PathBuf>, what: String },

    #[error("unsupported architecture {name:?} in {origin}: supported are {supported}")]
    UnsupportedArchitecture {
        name: String,
        origin: String,
        supported: &'static str,
    },

    #[error("unknown weight format {given:?}: use one of {known}")]
    UnknownFormat { given: String, known: &'static str },

    #[error("{0}")]
    Invalid(String),
}

impl ArchError {
    /// Attaches the file path to errors that were produced without one.
    pub fn at_path(self, p: &Path) -> Self {
        match self {
            ArchError::Gguf {
                path: None,
                offset,
                what,
            } => ArchError::Gguf {
                path: Some(p.to_path_buf()),
                offset,
                what,
            },
            ArchError::Config { path: None, what } => ArchError::Config {
                path: Some(p.to_path_buf()),
                what,
            },
            other => other,
        }
    }
}
