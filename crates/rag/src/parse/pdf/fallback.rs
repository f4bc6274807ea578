//! The built-in extractor, for when pdfium is not installed: lopdf decodes each page's content
//! stream into text lines (no positions or fonts, so no headings). Pure-Rust PDF parsers panic
//! on some real files, so the whole extraction runs behind `catch_unwind`, with the panic's
//! message kept out of the terminal and turned into the file's error.

use std::cell::RefCell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Once;

use crate::error::{RagError, Result};

thread_local! {
    /// Set while this thread runs the extractor: a panic then records its message here instead
    /// of printing it.
    static CAUGHT: RefCell<Option<String>> = const { RefCell::new(None) };
}

static HOOK: Once = Once::new();

/// The metadata title (when set) and the text of each page, page 1 first.
pub(super) fn extract(path: &Path, bytes: &[u8]) -> Result<(Option<String>, Vec<String>)> {
    guarded(path, || extract_unguarded(path, bytes))
}

/// Runs `f`, turning a panic into an error for `path` (its message is kept off the terminal).
fn guarded<T>(path: &Path, f: impl FnOnce() -> Result<T>) -> Result<T> {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let quiet = CAUGHT.with(|c| {
                let mut c = c.borrow_mut();
                match c.as_mut() {
                    Some(slot) => {
                        let message = info.payload_as_str().unwrap_or("a panic");
                        *slot = match info.location() {
                            Some(at) => format!("{message}, in {}:{}", at.file(), at.line()),
                            None => message.to_string(),
                        };
                        true
                    }
                    None => false,
                }
            });
            if !quiet {
                previous(info);
            }
        }));
    });
    CAUGHT.with(|c| *c.borrow_mut() = Some(String::new()));
    let result = catch_unwind(AssertUnwindSafe(f));
    let message = CAUGHT.with(|c| c.borrow_mut().take()).unwrap_or_default();
    match result {
        Ok(r) => r,
        Err(_) => Err(RagError::Parse {
            path: path.to_path_buf(),
            line: None,
            what: format!(
                "the built-in PDF extractor failed on this file ({}); install pdfium \
                 (scripts/install-pdfium) to read it",
                first_line(&message)
            ),
        }),
    }
}

fn first_line(message: &str) -> &str {
    let line = message.lines().next().unwrap_or_default().trim();
    if line.is_empty() { "it panicked" } else { line }
}

fn extract_unguarded(path: &Path, bytes: &[u8]) -> Result<(Option<String>, Vec<String>)> {
    let err = |what: String| RagError::Parse {
        path: path.to_path_buf(),
        line: None,
        what,
    };
    let doc = lopdf::Document::load_mem(bytes).map_err(|e| match e {
        lopdf::Error::Decryption(_)
        | lopdf::Error::InvalidPassword
        | lopdf::Error::UnsupportedSecurityHandler(_) => err(
            "encrypted PDF: it needs a password, which forja does not ask for (save an \
             unprotected copy)"
                .to_string(),
        ),
        other => err(format!(
            "not a readable PDF (corrupt or truncated): {other}"
        )),
    })?;
    if doc.is_encrypted() && doc.encryption_state.is_none() {
        return Err(err(
            "encrypted PDF: it needs a password, which forja does not ask for (save an \
             unprotected copy)"
                .to_string(),
        ));
    }
    let title = info_title(&doc);
    let mut pages = Vec::new();
    for (number, _) in doc.get_pages() {
        let text = doc
            .extract_text(&[number])
            .map_err(|e| err(format!("page {number}: {e}")))?;
        pages.push(text);
    }
    Ok((title, pages))
}

/// The `/Title` of the document information dictionary.
fn info_title(doc: &lopdf::Document) -> Option<String> {
    let info = doc.trailer.get(b"Info").ok()?;
    let dict = match info {
        lopdf::Object::Reference(id) => doc.get_dictionary(*id).ok()?,
        lopdf::Object::Dictionary(d) => d,
        _ => return None,
    };
    let title = lopdf::decode_text_string(dict.get(b"Title").ok()?).ok()?;
    let title = crate::document::normalize_space(&title);
    (!title.is_empty() && title != "(unspecified)" && title != "untitled").then_some(title)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_the_files_error() {
        let path = Path::new("odd.pdf");
        let r: Result<()> = guarded(path, || {
            let pages: Vec<u32> = Vec::new();
            let _ = pages[usize::from(path.exists())];
            Ok(())
        });
        let e = r.unwrap_err().to_string();
        assert!(
            e.starts_with("odd.pdf: the built-in PDF extractor failed on this file ("),
            "{e}"
        );
        assert!(e.contains("index out of bounds"), "{e}");
        // The guard is off again: the next call runs normally.
        assert_eq!(guarded(path, || Ok(7)).unwrap(), 7);
        assert!(CAUGHT.with(|c| c.borrow().is_none()));
    }
}
