//! Office Open XML packages (DOCX, XLSX) are zip archives. They are opened here with a cap on
//! what they may unpack to, so that a small file cannot expand into gigabytes (a zip bomb):
//! the sizes the archive declares are checked first, then the bytes actually inflated are
//! counted, since a crafted archive can declare sizes it does not keep to.

use std::io::{Cursor, Read};
use std::path::Path;

use zip::ZipArchive;
use zip::result::ZipError;

use crate::error::{RagError, Result};

/// Most bytes a package may unpack to, all its parts together.
pub(super) const MAX_UNPACKED: u64 = 256 << 20;

/// An opened zip package and what is left of its unpacking budget.
pub(super) struct Package<'a> {
    path: &'a Path,
    kind: &'static str,
    zip: ZipArchive<Cursor<&'a [u8]>>,
    budget: u64,
}

impl std::fmt::Debug for Package<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Package")
            .field("path", &self.path)
            .field("kind", &self.kind)
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

pub(super) fn error(path: &Path, what: String) -> RagError {
    RagError::Parse {
        path: path.to_path_buf(),
        line: None,
        what,
    }
}

impl<'a> Package<'a> {
    /// Opens `bytes` as a zip package of `kind` (`DOCX`, `XLSX`, named in errors).
    pub fn open(path: &'a Path, bytes: &'a [u8], kind: &'static str) -> Result<Self> {
        let zip = ZipArchive::new(Cursor::new(bytes)).map_err(|e| {
            let hint = if bytes.starts_with(b"PK") {
                "the zip archive is damaged or truncated"
            } else if bytes.starts_with(b"\xD0\xCF\x11\xE0") {
                "the content is a compound file: a password-protected Office file, or an Office \
                 97–2003 one under a new name"
            } else {
                "the content is not a zip archive"
            };
            error(
                path,
                format!("not a readable {kind} file ({kind} files are zip archives; {hint}: {e})"),
            )
        })?;
        let declared = zip.decompressed_size().unwrap_or(0);
        if declared > u128::from(MAX_UNPACKED) {
            return Err(too_big(path, kind, declared));
        }
        Ok(Package {
            path,
            kind,
            zip,
            budget: MAX_UNPACKED,
        })
    }

    /// The unpacked bytes of part `name`; `None` when the package has no such part.
    pub fn read(&mut self, name: &str) -> Result<Option<Vec<u8>>> {
        let file = match self.zip.by_name(name) {
            Ok(f) => f,
            Err(ZipError::FileNotFound) => return Ok(None),
            Err(e) => return Err(error(self.path, format!("{name}: {e}"))),
        };
        let mut out = Vec::new();
        file.take(self.budget + 1)
            .read_to_end(&mut out)
            .map_err(|e| error(self.path, format!("{name}: cannot unpack: {e}")))?;
        self.spend(out.len() as u64)?;
        Ok(Some(out))
    }

    /// Unpacks every part once without keeping it, so that a reader given the same bytes
    /// afterwards (calamine) stays within the budget too.
    pub fn check_all(&mut self) -> Result<()> {
        for i in 0..self.zip.len() {
            let file = self
                .zip
                .by_index(i)
                .map_err(|e| error(self.path, format!("zip entry {i}: {e}")))?;
            let name = file.name().map(|n| n.into_owned()).unwrap_or_default();
            let n = std::io::copy(&mut file.take(self.budget + 1), &mut std::io::sink())
                .map_err(|e| error(self.path, format!("{name}: cannot unpack: {e}")))?;
            self.spend(n)?;
        }
        Ok(())
    }

    fn spend(&mut self, n: u64) -> Result<()> {
        if n > self.budget {
            return Err(too_big(
                self.path,
                self.kind,
                u128::from(MAX_UNPACKED - self.budget + n),
            ));
        }
        self.budget -= n;
        Ok(())
    }
}

fn too_big(path: &Path, kind: &str, size: u128) -> RagError {
    error(
        path,
        format!(
            "the {kind} file unpacks to more than {} MiB (at least {} MiB), the limit for one \
             document; refusing it as a possible zip bomb",
            MAX_UNPACKED >> 20,
            size >> 20
        ),
    )
}
