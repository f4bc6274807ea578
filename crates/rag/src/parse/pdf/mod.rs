//! PDF: the text layer of each page, with page numbers. With pdfium (libpdfium loaded at run
//! time, found as `library.rs` says) lines keep their positions and fonts, so paragraphs, bullet
//! items and headings (by font size and weight) are recovered and give the section path; the
//! title is the metadata title or the first heading. Without pdfium the built-in extractor
//! (lopdf, behind a panic guard) gives each page's text as paragraphs, with no headings. A file
//! that is encrypted, corrupt, or has no text layer at all (a scan: forja does no OCR) is an
//! error that names it. Tables are recognized with pdfium where rows of short cells line up in
//! columns (cells wrapped onto several lines are not); the built-in extractor reads them as text.

mod fallback;
mod layout;
mod library;
mod pdfium;

use std::path::Path;

pub use library::pdfium_missing;

use super::Parsed;
use crate::document::{Block, Element};
use crate::error::{RagError, Result};

/// What is wrong with a PDF that needs a password to be read.
const ENCRYPTED: &str = "encrypted PDF: it needs a password, which forja does not \
ask for (save an unprotected copy)";

/// What the document information dictionary says of the document.
#[derive(Debug, Default)]
struct Info {
    /// `Title`, unless empty or a placeholder.
    title: Option<String>,
    /// `CreationDate`, else `ModDate`.
    date: Option<i64>,
}

impl Info {
    /// From the raw values of `Title`, `CreationDate` and `ModDate`.
    fn new(title: Option<&str>, created: Option<&str>, modified: Option<&str>) -> Info {
        let title = title
            .map(crate::document::normalize_space)
            .filter(|t| !t.is_empty() && t != "(unspecified)" && t != "untitled");
        let date = created
            .and_then(crate::date::parse)
            .or_else(|| modified.and_then(crate::date::parse));
        Info { title, date }
    }
}

/// The title (metadata title, else first heading), date and elements of the PDF in `bytes`,
/// with pdfium when it is installed, else with the built-in extractor.
pub(super) fn parse(path: &Path, bytes: &[u8]) -> Result<Parsed> {
    match library::pdfium() {
        Ok(pdfium) => {
            let (info, pages) = pdfium::extract(pdfium, path, bytes)?;
            require_text(path, pages.len(), pages.iter().all(Vec::is_empty), "")?;
            let (first_heading, elements) = layout::elements(&pages);
            Ok(Parsed {
                title: info.title.or(first_heading),
                date: info.date,
                elements,
            })
        }
        Err(_) => parse_fallback(path, bytes),
    }
}

/// The PDF in `bytes` read by the built-in extractor, as [`crate::parse_bytes`] reads it when
/// pdfium is not installed: the metadata title and date, and one or more paragraphs per page.
pub fn parse_fallback(path: &Path, bytes: &[u8]) -> Result<Parsed> {
    let (info, pages) = fallback::extract(path, bytes)?;
    require_text(
        path,
        pages.len(),
        pages.iter().all(|p| p.trim().is_empty()),
        ", or text the built-in extractor cannot decode (install pdfium: scripts/install-pdfium)",
    )?;
    let mut elements = Vec::new();
    for (i, text) in pages.iter().enumerate() {
        let page = u32::try_from(i + 1).unwrap_or(u32::MAX);
        for block in paragraphs(text) {
            elements.push(Element {
                block,
                section: Vec::new(),
                page: Some(page),
                span: None,
            });
        }
    }
    Ok(Parsed {
        title: info.title,
        date: info.date,
        elements,
    })
}

/// An error when the document has no page, or no text on any (`hint` ends the message).
fn require_text(path: &Path, pages: usize, empty: bool, hint: &str) -> Result<()> {
    if pages == 0 {
        return Err(RagError::Parse {
            path: path.to_path_buf(),
            line: None,
            what: "the PDF has no pages".to_string(),
        });
    }
    if empty {
        return Err(RagError::Parse {
            path: path.to_path_buf(),
            line: None,
            what: format!(
                "no text layer on any of its {pages} page(s): a scanned or image-only PDF \
                 (forja does no OCR; run it through an OCR tool first){hint}"
            ),
        });
    }
    Ok(())
}

/// Paragraphs and list items of a page's text without positions: blank lines separate them, a
/// line that opens with a bullet starts an item, and a line that ends a sentence well short of
/// the page's longest line ends its paragraph. Lone page numbers at the top or bottom go.
fn paragraphs(text: &str) -> Vec<Block> {
    let lines: Vec<String> = text.lines().map(crate::document::normalize_space).collect();
    let filled = lines.iter().filter(|l| !l.is_empty()).count();
    let longest = lines.iter().map(|l| l.chars().count()).max().unwrap_or(0);
    let mut out = Vec::new();
    let mut current = String::new();
    let mut item = false;
    let flush = |out: &mut Vec<Block>, current: &mut String, item: bool| {
        let text = std::mem::take(current);
        if text.is_empty() {
            return;
        }
        out.push(if item {
            let body = text.trim_start_matches(|c: char| layout::BULLETS.contains(&c) || c == '-');
            Block::ListItem(body.trim_start().to_string())
        } else {
            Block::Paragraph(text)
        });
    };
    // Index among the non-blank lines, for the page-number test.
    let mut i = 0;
    for line in &lines {
        if line.is_empty() {
            flush(&mut out, &mut current, item);
            continue;
        }
        i += 1;
        if (i <= 2 || i + 2 > filled) && layout::is_page_number(line) {
            flush(&mut out, &mut current, item);
            continue;
        }
        // Some producers put the bullet on a line of its own.
        let bullet_only = line.chars().count() == 1 && line.starts_with(layout::BULLETS);
        if bullet_only || layout::starts_with_bullet(line) {
            flush(&mut out, &mut current, item);
            item = true;
        } else if current.is_empty() {
            item = false;
        }
        if !current.is_empty() {
            current.push(' ');
        }
        current.push_str(line);
        let short = line.chars().count() * 10 < longest * 7;
        if short && line.ends_with(['.', '!', '?', ':']) {
            flush(&mut out, &mut current, item);
        }
    }
    flush(&mut out, &mut current, item);
    out
}
