//! Errors of hardware probing.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum HwError {
    #[error("cannot query free space of {}: {source}", path.display())]
    Disk {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("NVML call {call} failed with code {code}")]
    Nvml { call: &'static str, code: u32 },
}
