//! The built-in extractor, for when pdfium is not installed: lopdf parses the file and decodes
//! the text each page shows — its content streams and the form XObjects they paint — into lines
//! (no positions or fonts, so no headings). Pure-Rust PDF parsers panic on some real files, so
//! the whole extraction runs behind `catch_unwind`, with the panic's message kept out of the
//! terminal and turned into the file's error.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Once;

use lopdf::content::Content;
use lopdf::{Dictionary, Document, Object, ObjectId};

use super::Info;
use crate::error::{RagError, Result};

thread_local! {
    /// Set while this thread runs the extractor: a panic then records its message here instead
    /// of printing it.
    static CAUGHT: RefCell<Option<String>> = const { RefCell::new(None) };
}

static HOOK: Once = Once::new();

/// The document's metadata (title, date) and the text of each page, page 1 first.
pub(super) fn extract(path: &Path, bytes: &[u8]) -> Result<(Info, Vec<String>)> {
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

fn extract_unguarded(path: &Path, bytes: &[u8]) -> Result<(Info, Vec<String>)> {
    let err = |what: String| RagError::Parse {
        path: path.to_path_buf(),
        line: None,
        what,
    };
    let doc = Document::load_mem(bytes).map_err(|e| match e {
        lopdf::Error::Decryption(_)
        | lopdf::Error::InvalidPassword
        | lopdf::Error::UnsupportedSecurityHandler(_) => err(super::ENCRYPTED.to_string()),
        other => err(format!(
            "not a readable PDF (corrupt or truncated): {other}"
        )),
    })?;
    if doc.is_encrypted() && doc.encryption_state.is_none() {
        return Err(err(super::ENCRYPTED.to_string()));
    }
    let info = info(&doc);
    let mut pages = Vec::new();
    for (number, id) in doc.get_pages() {
        let text = page_text(&doc, id).map_err(|e| err(format!("page {number}: {e}")))?;
        pages.push(text);
    }
    Ok((info, pages))
}

/// Form XObjects nest at most this deep (deeper ones are skipped).
const MAX_FORM_DEPTH: usize = 8;

/// The text a page shows: its content streams and the form XObjects they paint, in order, a line
/// break wherever the text position moves to another line.
fn page_text(doc: &Document, page: ObjectId) -> lopdf::Result<String> {
    let (own, inherited) = doc.get_page_resources(page)?;
    let mut resources: Vec<&Dictionary> = own.into_iter().collect();
    resources.extend(
        inherited
            .iter()
            .filter_map(|id| doc.get_dictionary(*id).ok()),
    );
    let fonts = encodings(doc, doc.get_page_fonts(page)?);
    let content = doc.get_page_content_with_limit(page, lopdf::DEFAULT_MAX_DECOMPRESSED_SIZE)?;
    let mut text = String::new();
    let mut path = Vec::new();
    show(
        doc,
        &content,
        &[&fonts],
        &xobjects(&resources),
        &mut path,
        &mut text,
    )?;
    Ok(text)
}

type Encodings<'a> = BTreeMap<Vec<u8>, lopdf::Encoding<'a>>;

fn encodings<'a>(doc: &'a Document, fonts: BTreeMap<Vec<u8>, &'a Dictionary>) -> Encodings<'a> {
    fonts
        .into_iter()
        .filter_map(|(name, font)| Some((name, font.get_font_encoding(doc).ok()?)))
        .collect()
}

/// The XObjects named in `resources` (the nearest first wins).
fn xobjects(resources: &[&Dictionary]) -> BTreeMap<Vec<u8>, ObjectId> {
    let mut out = BTreeMap::new();
    for r in resources.iter().rev() {
        if let Ok(Object::Dictionary(d)) = r.get(b"XObject") {
            for (name, value) in d.iter() {
                if let Object::Reference(id) = value {
                    out.insert(name.clone(), *id);
                }
            }
        }
    }
    out
}

/// Appends the text shown by `content` to `text`. `fonts` are the font maps in scope, the
/// innermost last; `path` holds the forms being shown (a form that paints itself is not entered
/// again).
fn show<'a>(
    doc: &'a Document,
    content: &[u8],
    fonts: &[&Encodings<'a>],
    xobjects: &BTreeMap<Vec<u8>, ObjectId>,
    path: &mut Vec<ObjectId>,
    text: &mut String,
) -> lopdf::Result<()> {
    let newline = |text: &mut String| {
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
    };
    let mut font = None;
    for op in Content::decode(content)?.operations {
        let operands = &op.operands;
        match op.operator.as_str() {
            "Tf" => {
                font = operands
                    .first()
                    .and_then(|o| o.as_name().ok())
                    .and_then(|n| fonts.iter().rev().find_map(|f| f.get(n)));
            }
            "Tj" | "TJ" => {
                if let Some(encoding) = font {
                    collect(text, encoding, operands);
                }
            }
            "'" | "\"" => {
                newline(text);
                if let (Some(encoding), Some(last)) = (font, operands.last()) {
                    collect(text, encoding, std::slice::from_ref(last));
                }
            }
            "Td" | "TD" => {
                let dy = operands
                    .get(1)
                    .and_then(|o| o.as_float().ok())
                    .unwrap_or(0.0);
                if dy != 0.0 {
                    newline(text);
                } else if !text.ends_with([' ', '\n']) && !text.is_empty() {
                    text.push(' ');
                }
            }
            "T*" | "Tm" | "ET" => newline(text),
            "Do" => {
                let Some(id) = operands
                    .first()
                    .and_then(|o| o.as_name().ok())
                    .and_then(|n| xobjects.get(n))
                else {
                    continue;
                };
                if path.len() >= MAX_FORM_DEPTH || path.contains(id) {
                    continue;
                }
                let Ok(form) = doc.get_object(*id).and_then(Object::as_stream) else {
                    continue;
                };
                if form.dict.get(b"Subtype").and_then(Object::as_name).ok() != Some(b"Form") {
                    continue;
                }
                let own = form
                    .dict
                    .get_deref(b"Resources", doc)
                    .and_then(Object::as_dict)
                    .ok();
                let own_fonts = own.map(|r| encodings(doc, fonts_of(doc, r)));
                let mut form_fonts = fonts.to_vec();
                form_fonts.extend(own_fonts.as_ref());
                let mut form_xobjects = xobjects.clone();
                if let Some(r) = own {
                    form_xobjects.extend(self::xobjects(&[r]));
                }
                let data = if form.dict.get(b"Filter").is_ok() {
                    form.decompressed_content_with_limit(lopdf::DEFAULT_MAX_DECOMPRESSED_SIZE)?
                } else {
                    form.content.clone()
                };
                path.push(*id);
                show(doc, &data, &form_fonts, &form_xobjects, path, text)?;
                path.pop();
            }
            _ => {}
        }
    }
    Ok(())
}

/// The fonts of a resource dictionary.
fn fonts_of<'a>(doc: &'a Document, resources: &'a Dictionary) -> BTreeMap<Vec<u8>, &'a Dictionary> {
    let Ok(fonts) = resources.get_deref(b"Font", doc).and_then(Object::as_dict) else {
        return BTreeMap::new();
    };
    fonts
        .iter()
        .filter_map(|(name, value)| {
            let font = match value {
                Object::Reference(id) => doc.get_dictionary(*id).ok()?,
                Object::Dictionary(d) => d,
                _ => return None,
            };
            Some((name.clone(), font))
        })
        .collect()
}

/// The strings of a text-showing operator, decoded; a large negative kerning in a `TJ` array
/// reads as a space.
fn collect(text: &mut String, encoding: &lopdf::Encoding<'_>, operands: &[Object]) {
    for operand in operands {
        match operand {
            Object::String(bytes, _) => {
                // Bytes the font's encoding cannot map are left out.
                let _ = encoding.write_to_string(bytes, text);
            }
            Object::Array(items) => collect(text, encoding, items),
            Object::Integer(i) if *i < -200 => text.push(' '),
            Object::Real(r) if *r < -200.0 => text.push(' '),
            _ => {}
        }
    }
}

/// The `/Title` of the document information dictionary.
/// The document information dictionary's title and dates.
fn info(doc: &Document) -> Info {
    let dict = match doc.trailer.get(b"Info") {
        Ok(Object::Reference(id)) => doc.get_dictionary(*id).ok(),
        Ok(Object::Dictionary(d)) => Some(d),
        _ => None,
    };
    let text = |key: &[u8]| {
        dict.and_then(|d| d.get(key).ok())
            .and_then(|v| lopdf::decode_text_string(v).ok())
    };
    Info::new(
        text(b"Title").as_deref(),
        text(b"CreationDate").as_deref(),
        text(b"ModDate").as_deref(),
    )
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
