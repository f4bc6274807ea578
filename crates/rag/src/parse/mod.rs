//! Source files → [`Document`]s. The format comes from the file extension; a file named
//! explicitly with an unknown extension is read as plain text when it is UTF-8 without NUL
//! bytes. Text formats: Markdown, HTML, CSV/TSV, plain text. Binary and XML formats: Word
//! (`.docx`), Excel (`.xlsx`, `.xlsm`, `.xls`) and XML (`.xml`, `.xbrl`; XBRL instances as a
//! table of facts). Zip packages are unpacked under a size cap (zip bombs are refused) and XML
//! entities are never expanded. PDFs are read through pdfium
//! when libpdfium is installed, else by a built-in extractor (see [`pdf`]).

mod csv;
mod docx;
mod html;
mod markdown;
mod package;
pub mod pdf;
mod text;
mod xbrl;
mod xlsx;
mod xml;
mod xml_tree;

use std::path::Path;

use crate::document::{Document, Element, content_hash};
use crate::error::{RagError, Result};

/// A file format forja recognizes by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Markdown,
    Html,
    /// Comma-separated (`delimiter` `,`) or tab-separated (`\t`) values.
    Csv {
        delimiter: u8,
    },
    /// Word, Office Open XML (`.docx`).
    Docx,
    /// Excel: `.xlsx` / `.xlsm` (Office Open XML) or `.xls` (Excel 97–2003), told by content.
    Spreadsheet,
    /// XML; XBRL instances are recognized by their root element.
    Xml,
    /// PDF: the text layer of each page (see [`pdf`]).
    Pdf,
}

impl Format {
    /// The format of `path` by its extension; `None` for an unknown extension.
    pub fn of(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        Some(match ext.as_str() {
            "txt" | "text" | "log" | "rst" => Format::Text,
            "md" | "markdown" | "mdown" | "mkd" => Format::Markdown,
            "html" | "htm" | "xhtml" => Format::Html,
            "csv" => Format::Csv { delimiter: b',' },
            "tsv" | "tab" => Format::Csv { delimiter: b'\t' },
            "pdf" => Format::Pdf,
            "docx" => Format::Docx,
            "xlsx" | "xlsm" | "xls" => Format::Spreadsheet,
            "xml" | "xbrl" => Format::Xml,
            _ => return None,
        })
    }
}

/// Reads and parses `path`.
/// What a format's parser reads from a file: the title and date it gives itself, if any, and
/// its elements.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parsed {
    pub title: Option<String>,
    /// Seconds since the Unix epoch (see [`Document::date`]).
    pub date: Option<i64>,
    pub elements: Vec<Element>,
}

impl From<(Option<String>, Vec<Element>)> for Parsed {
    fn from((title, elements): (Option<String>, Vec<Element>)) -> Self {
        Parsed {
            title,
            date: None,
            elements,
        }
    }
}

pub fn parse_file(path: &Path) -> Result<Document> {
    let bytes = std::fs::read(path).map_err(|source| RagError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_bytes(path, &bytes)
}

/// Parses `bytes` as the content of `path` (whose extension picks the format).
pub fn parse_bytes(path: &Path, bytes: &[u8]) -> Result<Document> {
    let format = Format::of(path).unwrap_or(Format::Text);
    let stem = path
        .file_stem()
        .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
    let parsed: Parsed = match format {
        Format::Markdown => markdown::parse(as_text(path, bytes)?),
        Format::Html => html::parse(as_text(path, bytes)?),
        Format::Csv { delimiter } => csv::parse(path, as_text(path, bytes)?, delimiter)?.into(),
        Format::Docx => docx::parse(path, bytes)?,
        Format::Spreadsheet => xlsx::parse(path, bytes)?.into(),
        Format::Xml => xml::parse(path, bytes)?,
        Format::Pdf => pdf::parse(path, bytes)?,
        Format::Text => text::parse(as_text(path, bytes)?).into(),
    };
    Ok(Document {
        source: path.to_path_buf(),
        title: parsed.title.filter(|t| !t.is_empty()).unwrap_or(stem),
        content_hash: content_hash(bytes),
        date: parsed.date,
        elements: parsed.elements,
    })
}

/// The bytes as UTF-8 text (a leading byte-order mark dropped); binary content is an error.
fn as_text<'a>(path: &Path, bytes: &'a [u8]) -> Result<&'a str> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let parse_err = |line: Option<u64>, what: &str| RagError::Parse {
        path: path.to_path_buf(),
        line,
        what: what.to_string(),
    };
    let line_at =
        |offset: usize| 1 + bytes[..offset].iter().filter(|&&b| b == b'\n').count() as u64;
    if let Some(nul) = bytes.iter().position(|&b| b == 0) {
        return Err(parse_err(
            Some(line_at(nul)),
            "binary content (a NUL byte), not a text document",
        ));
    }
    std::str::from_utf8(bytes).map_err(|e| {
        parse_err(
            Some(line_at(e.valid_up_to())),
            "not UTF-8 text (convert the file to UTF-8)",
        )
    })
}
