//! The text layer of each page through pdfium: characters in pdfium's reading order, grouped
//! into lines (pdfium marks line ends), each with its baseline, font size and boldness, and cut
//! into cells where a gap wider than [`CELL_GAP`] font sizes separates two characters.

use std::path::Path;

use pdfium_render::prelude::{
    PdfDocumentMetadataTagType, PdfFontWeight, PdfPageTextChar, Pdfium, PdfiumError,
    PdfiumInternalError,
};

use super::Info;
use super::layout::{Cell, Line};
use crate::error::{RagError, Result};

/// The document's metadata (title, date) and the lines of each page, page 1 first.
pub(super) fn extract(
    pdfium: &Pdfium,
    path: &Path,
    bytes: &[u8],
) -> Result<(Info, Vec<Vec<Line>>)> {
    let doc = pdfium
        .load_pdf_from_byte_slice(bytes, None)
        .map_err(|e| open_error(path, &e))?;
    let meta = doc.metadata();
    let tag = |t| meta.get(t).map(|v| v.value().to_string());
    let info = Info::new(
        tag(PdfDocumentMetadataTagType::Title).as_deref(),
        tag(PdfDocumentMetadataTagType::CreationDate).as_deref(),
        tag(PdfDocumentMetadataTagType::ModificationDate).as_deref(),
    );
    let mut pages = Vec::new();
    for (i, page) in doc.pages().iter().enumerate() {
        let text = page.text().map_err(|e| RagError::Parse {
            path: path.to_path_buf(),
            line: None,
            what: format!("page {}: pdfium could not read its text: {e:?}", i + 1),
        })?;
        let mut lines = Vec::new();
        let mut current = LineBuilder::default();
        for ch in text.chars().iter() {
            match ch.unicode_char() {
                Some('\n') => lines.extend(current.finish()),
                Some('\r') | None => {}
                // pdfium reports a hyphen it took for a line-end break as U+0002.
                Some('\u{2}' | '\u{ad}') => current.soft_hyphen = true,
                Some(c) if c.is_control() => {}
                Some(c) => current.push(c, &ch),
            }
        }
        lines.extend(current.finish());
        pages.push(lines);
    }
    Ok((info, pages))
}

/// A clear message for a document pdfium would not open.
fn open_error(path: &Path, e: &PdfiumError) -> RagError {
    let what = match e {
        PdfiumError::PdfiumLibraryInternalError(PdfiumInternalError::PasswordError) => {
            super::ENCRYPTED.to_string()
        }
        PdfiumError::PdfiumLibraryInternalError(PdfiumInternalError::SecurityError) => {
            "encrypted PDF with a security handler pdfium does not support".to_string()
        }
        PdfiumError::PdfiumLibraryInternalError(
            PdfiumInternalError::FormatError | PdfiumInternalError::FileError,
        ) => "not a readable PDF (corrupt or truncated)".to_string(),
        other => format!("pdfium could not open it: {other:?}"),
    };
    RagError::Parse {
        path: path.to_path_buf(),
        line: None,
        what,
    }
}

/// A horizontal gap of more than this many font sizes between two characters of a line separates
/// two cells (table columns); gaps between words are a fraction of it.
const CELL_GAP: f32 = 0.8;

/// The line being read.
#[derive(Default)]
struct LineBuilder {
    cells: Vec<Cell>,
    /// Right edge of the last visible character.
    right: Option<f32>,
    text: String,
    /// (size in half points, characters) of the sizes seen.
    sizes: Vec<(i32, usize)>,
    first_bold: Option<bool>,
    last_bold: bool,
    y: Option<f32>,
    soft_hyphen: bool,
}

impl LineBuilder {
    fn push(&mut self, c: char, ch: &PdfPageTextChar<'_>) {
        if self.soft_hyphen {
            // A break marker in the middle of a line was no line end.
            self.soft_hyphen = false;
        }
        self.text.push(c);
        if c.is_whitespace() {
            if let Some(cell) = self.cells.last_mut() {
                cell.text.push(c);
            }
            return;
        }
        let points = ch.scaled_font_size().value;
        if let Ok(bounds) = ch.loose_bounds() {
            let (left, right) = (bounds.left().value, bounds.right().value);
            let gap = self.right.map(|r| left - r);
            match self.cells.last_mut() {
                Some(cell) if gap.is_none_or(|g| g <= CELL_GAP * points) => {
                    cell.right = cell.right.max(right);
                }
                _ => self.cells.push(Cell {
                    text: String::new(),
                    left,
                    right,
                }),
            }
            self.right = Some(right);
        }
        if let Some(cell) = self.cells.last_mut() {
            cell.text.push(c);
        }
        let size = (points * 2.0).round() as i32;
        match self.sizes.iter_mut().find(|(s, _)| *s == size) {
            Some(entry) => entry.1 += 1,
            None => self.sizes.push((size, 1)),
        }
        if self.y.is_none() {
            self.y = ch.origin().ok().map(|(_, y)| y.value);
            self.first_bold = Some(is_bold(ch));
        }
        self.last_bold = is_bold(ch);
    }

    fn finish(&mut self) -> Option<Line> {
        let done = std::mem::take(self);
        if done.text.trim().is_empty() {
            return None;
        }
        let size = done
            .sizes
            .iter()
            .max_by_key(|(_, n)| *n)
            .map_or(0.0, |(s, _)| *s as f32 / 2.0);
        let mut cells = done.cells;
        for cell in &mut cells {
            cell.text = cell.text.trim().to_string();
        }
        if cells.len() < 2 {
            cells.clear();
        }
        Some(Line {
            text: done.text.trim().to_string(),
            cells,
            size,
            bold: done.first_bold.unwrap_or(false) && done.last_bold,
            y: done.y.unwrap_or(0.0),
            soft_hyphen: done.soft_hyphen,
        })
    }
}

/// Bold by the font's weight, or by its name where the weight is not known (the standard 14
/// fonts carry none).
fn is_bold(ch: &PdfPageTextChar<'_>) -> bool {
    let weight = match ch.font_weight() {
        Some(PdfFontWeight::Weight100) => 100,
        Some(PdfFontWeight::Weight200) => 200,
        Some(PdfFontWeight::Weight300) => 300,
        Some(PdfFontWeight::Weight400Normal) => 400,
        Some(PdfFontWeight::Weight500) => 500,
        Some(PdfFontWeight::Weight600) => 600,
        Some(PdfFontWeight::Weight700Bold) => 700,
        Some(PdfFontWeight::Weight800) => 800,
        Some(PdfFontWeight::Weight900) => 900,
        Some(PdfFontWeight::Custom(w)) => w,
        None => 0,
    };
    if weight >= 100 {
        return weight >= 600;
    }
    let name = ch.font_name().to_ascii_lowercase();
    name.contains("bold") || name.contains("black") || name.contains("heavy")
}
