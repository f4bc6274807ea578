//! Excel workbooks through calamine: `.xlsx` / `.xlsm` (Office Open XML, a zip package, read
//! cell by cell within the unpacking cap) and `.xls` (Excel 97–2003 BIFF). The content decides
//! which, not the extension. Each worksheet is one section named after the sheet: a leading row
//! with a single filled cell (a caption above the table) becomes a paragraph, the first row
//! after it is the header, and every non-empty row is a record under that header. Columns with
//! no value anywhere are dropped, a header cell left empty is named by its column letter.
//! Numbers print without float noise, dates as ISO dates (`2024-03-31`, with the time when it
//! is not midnight), durations as hours:minutes:seconds.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;
use std::path::Path;

use calamine::{Data, DataRef, ExcelDateTime, Reader, SheetType, Xls, Xlsx};

use super::package::{Package, error};
use crate::document::{Block, Element, Table, normalize_space};
use crate::error::Result;

/// The first bytes of a compound file (Excel 97–2003 and encrypted Office files).
const CFB_MAGIC: &[u8] = b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1";

/// A sheet's filled cells: (row, column, text).
type Cells = Vec<(u32, u32, String)>;
/// A workbook's title (from its properties) and its worksheets' names and cells.
type Workbook = (Option<String>, Vec<(String, Cells)>);

pub(super) fn parse(path: &Path, bytes: &[u8]) -> Result<(Option<String>, Vec<Element>)> {
    let (title, sheets) = if bytes.starts_with(b"PK") {
        read_xlsx(path, bytes)?
    } else if bytes.starts_with(CFB_MAGIC) {
        read_xls(path, bytes)?
    } else {
        return Err(error(
            path,
            "not a spreadsheet: neither an Excel 2007+ workbook (a zip package) nor an \
             Excel 97–2003 one (a compound file)"
                .into(),
        ));
    };
    let mut elements = Vec::new();
    for (name, cells) in sheets {
        sheet_elements(&name, cells, &mut elements);
    }
    let title = title.map(|t| normalize_space(&t)).filter(|t| !t.is_empty());
    Ok((title, elements))
}

fn read_xlsx(path: &Path, bytes: &[u8]) -> Result<Workbook> {
    Package::open(path, bytes, "XLSX")?.check_all()?;
    let fail = |e: calamine::XlsxError| error(path, format!("not a readable Excel workbook: {e}"));
    let mut book: Xlsx<_> = Xlsx::new(Cursor::new(bytes)).map_err(fail)?;
    let title = book.workbook_properties().ok().and_then(|p| p.title);
    let names = worksheet_names(book.sheets_metadata());
    let mut sheets = Vec::new();
    for name in names {
        let mut reader = book
            .worksheet_cells_reader(&name)
            .map_err(|e| error(path, format!("sheet {name:?}: {e}")))?;
        let mut cells = Cells::new();
        while let Some(cell) = reader
            .next_cell()
            .map_err(|e| error(path, format!("sheet {name:?}: {e}")))?
        {
            let (row, col) = cell.get_position();
            let text = render_ref(cell.get_value());
            if !text.is_empty() {
                cells.push((row, col, text));
            }
        }
        sheets.push((name, cells));
    }
    Ok((title, sheets))
}

fn read_xls(path: &Path, bytes: &[u8]) -> Result<Workbook> {
    let fail = |e: calamine::XlsError| {
        error(
            path,
            format!("not a readable Excel 97–2003 workbook (or an encrypted Office file): {e}"),
        )
    };
    let mut book: Xls<_> = Xls::new(Cursor::new(bytes)).map_err(fail)?;
    let title = book.workbook_properties().ok().and_then(|p| p.title);
    let names = worksheet_names(book.sheets_metadata());
    let mut sheets = Vec::new();
    for name in names {
        let range = book
            .worksheet_range(&name)
            .map_err(|e| error(path, format!("sheet {name:?}: {e}")))?;
        let (row0, col0) = range.start().unwrap_or((0, 0));
        let mut cells = Cells::new();
        for (r, c, value) in range.used_cells() {
            let text = render(value);
            if !text.is_empty() {
                cells.push((row0 + r as u32, col0 + c as u32, text));
            }
        }
        sheets.push((name, cells));
    }
    Ok((title, sheets))
}

/// Worksheets in workbook order (chart, dialog and macro sheets hold no cells to read).
fn worksheet_names(sheets: &[calamine::Sheet]) -> Vec<String> {
    sheets
        .iter()
        .filter(|s| s.typ == SheetType::WorkSheet)
        .map(|s| s.name.clone())
        .collect()
}

/// One sheet's caption paragraphs and table.
fn sheet_elements(name: &str, cells: Cells, out: &mut Vec<Element>) {
    let mut rows: BTreeMap<u32, BTreeMap<u32, String>> = BTreeMap::new();
    for (r, c, text) in cells {
        rows.entry(r).or_default().insert(c, text);
    }
    let section = vec![name.to_string()];
    let push = |out: &mut Vec<Element>, block| {
        out.push(Element {
            block,
            section: section.clone(),
            page: None,
            span: None,
        });
    };
    let wide = rows.values().any(|r| r.len() > 1);
    let mut rows = rows.into_values().peekable();
    // Captions: single-cell rows above a table of several columns.
    while wide && rows.peek().is_some_and(|r| r.len() == 1) {
        if let Some(row) = rows.next() {
            for text in row.into_values() {
                push(out, Block::Paragraph(text));
            }
        }
    }
    let rows: Vec<BTreeMap<u32, String>> = rows.collect();
    let columns: Vec<u32> = rows
        .iter()
        .flat_map(|r| r.keys().copied())
        .collect::<BTreeSet<u32>>()
        .into_iter()
        .collect();
    let line = |row: &BTreeMap<u32, String>| -> Vec<String> {
        let mut cells: Vec<String> = columns
            .iter()
            .map(|c| row.get(c).cloned().unwrap_or_default())
            .collect();
        while cells.last().is_some_and(String::is_empty) {
            cells.pop();
        }
        cells
    };
    let mut rows = rows.iter();
    let Some(first) = rows.next() else {
        return;
    };
    let header: Vec<String> = columns
        .iter()
        .map(|c| match first.get(c) {
            Some(h) => h.clone(),
            None => column_letters(*c),
        })
        .collect();
    let table = Table {
        header,
        rows: rows.map(line).collect(),
    };
    push(out, Block::Table(table));
}

/// `A`, `B`, …, `Z`, `AA`, … for a 0-based column index.
fn column_letters(mut col: u32) -> String {
    let mut out = Vec::new();
    loop {
        out.push(b'A' + (col % 26) as u8);
        if col < 26 {
            break;
        }
        col = col / 26 - 1;
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

fn render_ref(v: &DataRef<'_>) -> String {
    match v {
        DataRef::Int(i) => i.to_string(),
        DataRef::Float(f) => number(*f),
        DataRef::String(s) => normalize_space(s),
        DataRef::SharedString(s) => normalize_space(s),
        DataRef::Bool(b) => boolean(*b),
        DataRef::DateTime(d) => datetime(d),
        DataRef::DateTimeIso(s) | DataRef::DurationIso(s) => s.clone(),
        DataRef::Error(e) => e.to_string(),
        DataRef::Empty => String::new(),
    }
}

fn render(v: &Data) -> String {
    match v {
        Data::Int(i) => i.to_string(),
        Data::Float(f) => number(*f),
        Data::String(s) => normalize_space(s),
        Data::Bool(b) => boolean(*b),
        Data::DateTime(d) => datetime(d),
        Data::DateTimeIso(s) | Data::DurationIso(s) => s.clone(),
        Data::Error(e) => e.to_string(),
        Data::Empty => String::new(),
    }
}

fn boolean(b: bool) -> String {
    if b { "TRUE" } else { "FALSE" }.to_string()
}

/// A number as a reader writes it: integers without a fraction, others with at most ten
/// decimals and no trailing zeros (`0.1`, not `0.1000000000000000055`).
pub(super) fn number(f: f64) -> String {
    if !f.is_finite() {
        return f.to_string();
    }
    if f.fract() == 0.0 && f.abs() < 1e15 {
        return format!("{}", f as i64);
    }
    if f != 0.0 && f.abs() < 1e-6 {
        return format!("{f:e}");
    }
    let s = format!("{f:.10}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0" } else { s }.to_string()
}

fn datetime(d: &ExcelDateTime) -> String {
    if d.is_duration() {
        let total = (d.as_f64() * 86_400.0).round() as i64;
        let (sign, total) = if total < 0 {
            ("-", -total)
        } else {
            ("", total)
        };
        return format!(
            "{sign}{}:{:02}:{:02}",
            total / 3600,
            total / 60 % 60,
            total % 60
        );
    }
    let (y, m, day, h, min, s, _) = d.to_ymd_hms_milli();
    let time = if s == 0 {
        format!("{h:02}:{min:02}")
    } else {
        format!("{h:02}:{min:02}:{s:02}")
    };
    if d.as_f64() < 1.0 {
        time
    } else if (h, min, s) == (0, 0, 0) {
        format!("{y:04}-{m:02}-{day:02}")
    } else {
        format!("{y:04}-{m:02}-{day:02} {time}")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code fails loudly")]

    use calamine::ExcelDateTimeType;

    use super::*;

    #[test]
    fn numbers_dates_and_columns_render_readably() {
        assert_eq!(number(3.0), "3");
        assert_eq!(number(0.1 + 0.2), "0.3");
        assert_eq!(number(-1234.5), "-1234.5");
        assert_eq!(number(1e20), "100000000000000000000");
        let date = |v| ExcelDateTime::new(v, ExcelDateTimeType::DateTime, false);
        assert_eq!(datetime(&date(45382.0)), "2024-03-31");
        assert_eq!(datetime(&date(45382.75)), "2024-03-31 18:00");
        assert_eq!(datetime(&date(0.5)), "12:00");
        let dur = ExcelDateTime::new(1.5, ExcelDateTimeType::TimeDelta, false);
        assert_eq!(datetime(&dur), "36:00:00");
        assert_eq!(column_letters(0), "A");
        assert_eq!(column_letters(25), "Z");
        assert_eq!(column_letters(26), "AA");
        assert_eq!(column_letters(701), "ZZ");
        assert_eq!(column_letters(702), "AAA");
    }
}
