//! The model store: hub names, resumable and verified pulls from the Hugging Face hub into its
//! own cache layout (so other tools find forja's downloads and forja finds theirs), imports of
//! local files, and forja's manifest of named models.
//!
//! The hub client is our own small one on the workspace's reqwest: hf-hub 1.0 does not resume
//! downloads, and it brings reqwest 0.13 (a second copy) and the hf-xet stack with it, while
//! what is needed here is two endpoints (the revision's file list with LFS sha256s, and
//! `resolve` with a Range header).

pub mod config;
pub mod download;
pub mod error;
pub mod hf_cache;
pub mod hub;
pub mod import;
pub mod listing;
pub mod manifest;
pub mod name;
pub mod packages;
pub mod store;

pub use config::StoreConfig;
pub use download::{FileProgress, NoProgress, PullProgress};
pub use error::StoreError;
pub use import::default_import_name;
pub use listing::{RemoteFile, RepoListing};
pub use manifest::{ManifestEntry, ManifestFile};
pub use name::{HubRef, Selector};
pub use packages::PackagedModel;
pub use store::{Pulled, Removed, Store};
