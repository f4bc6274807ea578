//! Free disk space where models live.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::HwError;

#[derive(Debug, Clone, Serialize)]
pub struct DiskInfo {
    /// The directory measured (the nearest existing ancestor of the models directory).
    pub path: PathBuf,
    pub total_bytes: u64,
    /// Bytes an unprivileged user can still write.
    pub free_bytes: u64,
}

/// Measures the file system holding `dir` (or its nearest existing ancestor).
pub fn probe(dir: &Path) -> Result<DiskInfo, HwError> {
    let mut path = dir.to_path_buf();
    while !path.exists() {
        if !path.pop() {
            path = PathBuf::from("/");
            break;
        }
    }
    statvfs(&path)
}

#[cfg(unix)]
#[allow(
    clippy::unnecessary_cast,
    reason = "statvfs field widths differ between platforms"
)]
fn statvfs(path: &Path) -> Result<DiskInfo, HwError> {
    use std::os::unix::ffi::OsStrExt;
    let err = |source| HwError::Disk {
        path: path.to_path_buf(),
        source,
    };
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| err(std::io::Error::from(std::io::ErrorKind::InvalidInput)))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: c_path is a valid NUL-terminated string and st points to writable memory of the
    // right type; statvfs fully initializes it when it returns 0.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(err(std::io::Error::last_os_error()));
    }
    // SAFETY: rc == 0, so statvfs initialized the struct.
    let st = unsafe { st.assume_init() };
    let frsize = st.f_frsize as u64;
    Ok(DiskInfo {
        path: path.to_path_buf(),
        total_bytes: st.f_blocks as u64 * frsize,
        free_bytes: st.f_bavail as u64 * frsize,
    })
}

#[cfg(not(unix))]
fn statvfs(path: &Path) -> Result<DiskInfo, HwError> {
    Err(HwError::Disk {
        path: path.to_path_buf(),
        source: std::io::Error::from(std::io::ErrorKind::Unsupported),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_an_existing_ancestor() {
        let d = probe(Path::new("/tmp/forja-does-not-exist/models")).unwrap();
        assert!(d.path.exists());
        assert!(d.total_bytes >= d.free_bytes && d.total_bytes > 0);
    }
}
