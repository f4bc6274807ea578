//! Compiled kernels kept on disk between runs: NVRTC takes seconds on a small CPU (1.5 s for
//! `kernels.cu`, 5.8 s with `mmq.cu` on a 2-core VM; on the 16 cores of an H200 machine only a
//! few hundredths), paid at every start of a GPU process without it. A file holds the PTX of one source for one architecture and NVRTC version
//! (named by two 64-bit hashes of the three), and is used only if it defines every kernel
//! forja launches from it; anything else — no file, another file, a damaged one, a folder that
//! cannot be written — compiles as before. The driver keeps its own cache of the PTX's
//! translation to machine code.

use std::hash::Hasher;
use std::path::{Path, PathBuf};

use crate::Result;

/// Where the kernels are kept: `$FORJA_KERNEL_CACHE` (empty: nowhere), else `cache/kernels`
/// under `$FORJA_HOME` (default `~/.local/share/forja`, where forja keeps its store).
pub fn kernel_cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("FORJA_KERNEL_CACHE") {
        return (!dir.is_empty()).then(|| PathBuf::from(dir));
    }
    let home = match std::env::var_os("FORJA_HOME") {
        Some(h) if !h.is_empty() => PathBuf::from(h),
        _ => PathBuf::from(std::env::var_os("HOME")?).join(".local/share/forja"),
    };
    Some(home.join("cache/kernels"))
}

/// Where a kernel set's PTX came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PtxOrigin {
    /// Compiled by NVRTC now (and stored, where the cache folder could be written).
    Compiled,
    /// Read from the cache.
    Cached,
}

/// The file of `key` (every input of the compilation) in `dir`.
fn file_of(dir: &Path, key: &[&[u8]]) -> PathBuf {
    // FNV-1a and the standard library's SipHash (fixed keys): 128 bits together.
    let mut fnv = 0xcbf2_9ce4_8422_2325u64;
    let mut sip = std::hash::DefaultHasher::new();
    for part in key {
        for &b in *part {
            fnv = (fnv ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        // A separator, so that moving bytes between parts changes the key.
        fnv = (fnv ^ 0xff).wrapping_mul(0x0000_0100_0000_01b3);
        sip.write(part);
        sip.write_u8(0xff);
    }
    dir.join(format!("{fnv:016x}{:016x}.ptx", sip.finish()))
}

/// Whether `ptx` defines every kernel of `names`.
pub(crate) fn defines(ptx: &str, names: &[&str]) -> bool {
    names.iter().all(|n| ptx.contains(&format!(".entry {n}(")))
}

/// The PTX compiled from `key`'s inputs: from `dir` when a file for them there defines every
/// kernel of `names` (and `fresh` is false), else `compile()`'s, then stored in `dir` (written
/// to a temporary file and renamed, so a reader never sees half a file; a failure to store is
/// ignored).
pub(crate) fn ptx_for(
    dir: Option<&Path>,
    key: &[&[u8]],
    names: &[&str],
    fresh: bool,
    compile: impl FnOnce() -> Result<String>,
) -> Result<(String, PtxOrigin)> {
    let file = dir.map(|d| file_of(d, key));
    if let Some(f) = file.as_ref().filter(|_| !fresh)
        && let Ok(ptx) = std::fs::read_to_string(f)
        && defines(&ptx, names)
    {
        return Ok((ptx, PtxOrigin::Cached));
    }
    let ptx = compile()?;
    if let (Some(f), Some(d)) = (&file, dir) {
        let tmp = d.join(format!(
            ".{}.{}.tmp",
            f.file_name().and_then(|n| n.to_str()).unwrap_or("kernels"),
            std::process::id()
        ));
        let stored = std::fs::create_dir_all(d)
            .and_then(|()| std::fs::write(&tmp, &ptx))
            .and_then(|()| std::fs::rename(&tmp, f));
        if stored.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }
    Ok((ptx, PtxOrigin::Compiled))
}
