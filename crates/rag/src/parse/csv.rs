//! CSV and TSV: one table whose header is the first record; every row stays paired with it.

use std::path::Path;

use crate::document::{Block, Element, Table};
use crate::error::{RagError, Result};

pub(super) fn parse(
    path: &Path,
    text: &str,
    delimiter: u8,
) -> Result<(Option<String>, Vec<Element>)> {
    let mut reader = ::csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(true)
        .has_headers(true)
        .from_reader(text.as_bytes());
    let err = |e: ::csv::Error| RagError::Parse {
        path: path.to_path_buf(),
        line: e.position().map(|p| p.line()),
        what: e.to_string(),
    };
    let header: Vec<String> = reader
        .headers()
        .map_err(err)?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    let mut table = Table {
        header,
        rows: Vec::new(),
    };
    for record in reader.records() {
        let record = record.map_err(err)?;
        let row: Vec<String> = record.iter().map(|v| v.trim().to_string()).collect();
        if row.iter().all(String::is_empty) {
            continue;
        }
        table.rows.push(row);
    }
    if table.header.iter().all(String::is_empty) && table.rows.is_empty() {
        return Ok((None, Vec::new()));
    }
    let element = Element {
        block: Block::Table(table),
        section: Vec::new(),
        page: None,
        span: Some(0..text.len()),
    };
    Ok((None, vec![element]))
}
