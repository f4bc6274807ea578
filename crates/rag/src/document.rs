//! The document model every parser produces: a source file as a sequence of structural
//! elements (headings, paragraphs, list items, tables, code), each with the headings above it
//! and, when the format has pages, its page. Chunking works on this model, never on raw bytes.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;

use sha2::{Digest, Sha256};

/// A parsed source file.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// The file it was read from.
    pub source: PathBuf,
    /// The document's title: its first top-level heading, HTML `<title>`, or the file stem.
    pub title: String,
    /// SHA-256 of the file's bytes, lowercase hex: equal hashes mean an unchanged file.
    pub content_hash: String,
    /// The date the document gives itself (seconds since the Unix epoch, UTC), from its
    /// metadata: a PDF's creation date, a Word file's `dcterms:created`, an HTML page's date
    /// meta tag, a Markdown file's front-matter `date`, an XBRL report's period end. `None`
    /// when it has none; the store then dates it by the file's modification time.
    pub date: Option<i64>,
    /// Elements in reading order.
    pub elements: Vec<Element>,
}

/// One structural element of a document.
#[derive(Debug, Clone, PartialEq)]
pub struct Element {
    pub block: Block,
    /// Headings above this element, outermost first (a heading's own path excludes itself).
    pub section: Vec<String>,
    /// 1-based page number, for formats that have pages.
    pub page: Option<u32>,
    /// Byte range of the element in the source text, when the parser knows it (not for HTML).
    pub span: Option<Range<usize>>,
}

/// What an element holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Block {
    /// A heading of `level` 1 (top) to 6.
    Heading {
        level: u8,
        text: String,
    },
    Paragraph(String),
    ListItem(String),
    Table(Table),
    /// Preformatted text or source code, kept verbatim.
    Code(String),
}

/// A table: a header row and data rows (each row as long as the header or shorter).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Table {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// The header as one line (`a | b | c`).
    pub fn header_line(&self) -> String {
        self.header.join(" | ")
    }

    /// Row `i` as one line (`1 | 2 | 3`); empty past the last row.
    pub fn row_line(&self, i: usize) -> String {
        self.rows
            .get(i)
            .map_or_else(String::new, |row| row.join(" | "))
    }
}

/// Kind of an element, and of a chunk (a chunk of mixed prose takes the kind `Text`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ElementKind {
    Heading,
    Paragraph,
    ListItem,
    Table,
    Code,
    /// Prose of several kinds (headings, paragraphs, list items) packed into one chunk.
    Text,
}

impl ElementKind {
    /// The name stored and used in filters.
    pub fn as_str(self) -> &'static str {
        match self {
            ElementKind::Heading => "heading",
            ElementKind::Paragraph => "paragraph",
            ElementKind::ListItem => "list",
            ElementKind::Table => "table",
            ElementKind::Code => "code",
            ElementKind::Text => "text",
        }
    }

    /// Parses a stored or user-given name.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "heading" => ElementKind::Heading,
            "paragraph" => ElementKind::Paragraph,
            "list" => ElementKind::ListItem,
            "table" => ElementKind::Table,
            "code" => ElementKind::Code,
            "text" => ElementKind::Text,
            _ => return None,
        })
    }
}

impl fmt::Display for ElementKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Block {
    pub fn kind(&self) -> ElementKind {
        match self {
            Block::Heading { .. } => ElementKind::Heading,
            Block::Paragraph(_) => ElementKind::Paragraph,
            Block::ListItem(_) => ElementKind::ListItem,
            Block::Table(_) => ElementKind::Table,
            Block::Code(_) => ElementKind::Code,
        }
    }
}

/// SHA-256 of `bytes` as lowercase hex.
pub fn content_hash(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Tracks the heading path while a parser walks a document.
#[derive(Debug, Default, Clone)]
pub(crate) struct SectionPath {
    /// (level, text) of the open headings, outermost first.
    open: Vec<(u8, String)>,
}

impl SectionPath {
    /// The path for elements under the current headings.
    pub fn current(&self) -> Vec<String> {
        self.open.iter().map(|(_, t)| t.clone()).collect()
    }

    /// Enters a heading: closes the open headings of the same or a deeper level.
    pub fn enter(&mut self, level: u8, text: &str) {
        while self.open.last().is_some_and(|(l, _)| *l >= level) {
            self.open.pop();
        }
        self.open.push((level, text.to_string()));
    }
}

/// Collapses runs of whitespace into single spaces and trims.
pub(crate) fn normalize_space(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
