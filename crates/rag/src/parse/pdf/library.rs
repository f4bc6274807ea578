//! Finding and binding libpdfium, once per process. Looked for, in order: the file named by
//! `FORJA_PDFIUM`; `libpdfium.so` in `$FORJA_HOME/lib` (FORJA_HOME defaulting to
//! `~/.local/share/forja`); next to the running executable; the system library path. When
//! `FORJA_PDFIUM` is set, only that file is tried.

use std::path::PathBuf;
use std::sync::OnceLock;

use pdfium_render::prelude::Pdfium;

/// How to get pdfium, for the message that says it is missing.
const INSTALL_HINT: &str = "install it with scripts/install-pdfium (into $FORJA_HOME/lib) or set \
FORJA_PDFIUM to a libpdfium file; until then PDFs are read by the built-in extractor (text and \
pages, no headings)";

static PDFIUM: OnceLock<Result<Pdfium, String>> = OnceLock::new();

/// The process's pdfium, bound on first use; the error says where it was looked for and how to
/// install it.
pub(super) fn pdfium() -> Result<&'static Pdfium, &'static str> {
    match PDFIUM.get_or_init(bind) {
        Ok(p) => Ok(p),
        Err(why) => Err(why.as_str()),
    }
}

/// Why PDFs are not read with pdfium (where it was looked for, how to install it), or `None`
/// when pdfium is in use. Binds pdfium if that was not tried yet.
pub fn pdfium_missing() -> Option<&'static str> {
    pdfium().err()
}

fn bind() -> Result<Pdfium, String> {
    let name = Pdfium::pdfium_platform_library_name();
    if let Some(explicit) = std::env::var_os("FORJA_PDFIUM").filter(|v| !v.is_empty()) {
        let path = PathBuf::from(explicit);
        return Pdfium::bind_to_library(&path)
            .map(Pdfium::new)
            .map_err(|e| {
                format!(
                    "pdfium could not be loaded from FORJA_PDFIUM={}: {}; {INSTALL_HINT}",
                    path.display(),
                    load_error(&e)
                )
            });
    }
    let mut tried = Vec::new();
    let mut candidates = vec![forja_home().join("lib").join(&name)];
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(PathBuf::from))
    {
        candidates.push(dir.join(&name));
    }
    for path in candidates {
        if !path.is_file() {
            tried.push(path.display().to_string());
            continue;
        }
        match Pdfium::bind_to_library(&path) {
            Ok(bindings) => return Ok(Pdfium::new(bindings)),
            Err(e) => tried.push(format!("{} ({})", path.display(), load_error(&e))),
        }
    }
    match Pdfium::bind_to_system_library() {
        Ok(bindings) => Ok(Pdfium::new(bindings)),
        Err(_) => {
            tried.push(format!(
                "{} on the system library path",
                name.to_string_lossy()
            ));
            Err(format!(
                "pdfium was not found (looked for {}); {INSTALL_HINT}",
                tried.join(", ")
            ))
        }
    }
}

/// `$FORJA_HOME`, else `~/.local/share/forja` (where forja keeps its store and libraries).
fn forja_home() -> PathBuf {
    match std::env::var_os("FORJA_HOME") {
        Some(h) if !h.is_empty() => PathBuf::from(h),
        _ => std::env::var_os("HOME")
            .map_or_else(|| PathBuf::from("."), PathBuf::from)
            .join(".local/share/forja"),
    }
}

fn load_error(e: &pdfium_render::prelude::PdfiumError) -> String {
    use pdfium_render::prelude::PdfiumError;
    match e {
        PdfiumError::LoadLibraryError(e) => e.to_string(),
        other => format!("{other:?}"),
    }
}
