//! Word and Excel files written by real producers (python-docx, openpyxl, xlwt: see
//! scripts/fixtures/make_office_fixtures.py) parsed into structured documents, and the ways a
//! bad office file is refused.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

use forja_rag::{
    Block, ChunkOptions, Element, ElementKind, Format, RagError, Table, chunk_document,
    parse_bytes, parse_file,
};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/documents")
        .join(name)
}

fn count(t: &str) -> forja_rag::Result<usize> {
    Ok(common::words(t).count() + 2)
}

fn table(e: &Element) -> &Table {
    match &e.block {
        Block::Table(t) => t,
        other => panic!("not a table: {other:?}"),
    }
}

/// (kind, text or header line, section path joined by `/`, page) of every element.
fn outline(elements: &[Element]) -> Vec<(ElementKind, String, String, Option<u32>)> {
    elements
        .iter()
        .map(|e| {
            let text = match &e.block {
                Block::Heading { text, .. }
                | Block::Paragraph(text)
                | Block::ListItem(text)
                | Block::Code(text) => text.clone(),
                Block::Table(t) => t.header_line(),
            };
            (e.block.kind(), text, e.section.join("/"), e.page)
        })
        .collect()
}

fn parse_error(path: &str, bytes: &[u8]) -> String {
    let err = parse_bytes(Path::new(path), bytes).unwrap_err();
    assert!(matches!(err, RagError::Parse { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.starts_with(path), "the error names the file: {msg}");
    msg
}

#[test]
fn office_extensions_pick_their_formats() {
    assert_eq!(Format::of(Path::new("a.DOCX")), Some(Format::Docx));
    for name in ["a.xlsx", "a.xlsm", "a.xls"] {
        assert_eq!(Format::of(Path::new(name)), Some(Format::Spreadsheet));
    }
    for name in ["a.xml", "a.xbrl"] {
        assert_eq!(Format::of(Path::new(name)), Some(Format::Xml));
    }
}

#[test]
fn docx_keeps_title_headings_lists_tables_and_hard_page_breaks() {
    let doc = parse_file(&fixture("report.docx")).unwrap();
    // The Title-style paragraph, not python-docx's default "Word Document" property.
    assert_eq!(doc.title, "Annual Report 2024");
    // docProps/core.xml's dcterms:created, 2024-05-01T12:00:00Z.
    assert_eq!(doc.date, Some(1_714_564_800));
    use ElementKind::*;
    let s = String::from;
    assert_eq!(
        outline(&doc.elements),
        [
            (
                Paragraph,
                s("Acme Corp grew in every region. Second line after a break and a tab."),
                s(""),
                Some(1)
            ),
            (Heading, s("Revenue"), s(""), Some(1)),
            (
                Paragraph,
                s("Revenue rose to 1.2 million dollars."),
                s("Revenue"),
                Some(1)
            ),
            (
                Table,
                s("Quarter | Region | Revenue"),
                s("Revenue"),
                Some(1)
            ),
            (Heading, s("Regions"), s("Revenue"), Some(1)),
            (
                ListItem,
                s("Europe led growth"),
                s("Revenue/Regions"),
                Some(1)
            ),
            (ListItem, s("Asia followed"), s("Revenue/Regions"), Some(1)),
            (
                ListItem,
                s("Open two offices"),
                s("Revenue/Regions"),
                Some(1)
            ),
            (Heading, s("Outlook detail"), s("Revenue/Regions"), Some(1)),
            (
                Paragraph,
                s("Orders for 2025 are booked."),
                s("Revenue/Regions/Outlook detail"),
                Some(1)
            ),
            // After the hard page break.
            (
                Heading,
                s("Risks"),
                s("Revenue/Regions/Outlook detail"),
                Some(2)
            ),
            (Paragraph, s("Currency risk remains."), s("Risks"), Some(2)),
            // A body-text paragraph made a heading by its outline level alone.
            (
                Heading,
                s("Mitigation by outline level"),
                s("Risks"),
                Some(2)
            ),
            (
                Paragraph,
                s("Hedging covers half of the exposure."),
                s("Risks/Mitigation by outline level"),
                Some(2)
            ),
            // A one-cell table is read as the content it frames.
            (
                Paragraph,
                s("Text inside a one-cell frame."),
                s("Risks/Mitigation by outline level"),
                Some(2)
            ),
        ]
    );
    let levels: Vec<u8> = doc
        .elements
        .iter()
        .filter_map(|e| match e.block {
            Block::Heading { level, .. } => Some(level),
            _ => None,
        })
        .collect();
    assert_eq!(levels, [1, 2, 3, 1, 2]);
    // The header is the first row; a vertically merged cell repeats its value, a horizontally
    // merged one fills the first of its columns.
    let t = table(&doc.elements[3]);
    assert_eq!(
        t.rows,
        [
            ["Q1", "Europe", "300"],
            ["Q2", "Europe", "450"],
            ["Total", "", "750"]
        ]
    );
    // The picture left no trace.
    let all = format!("{:?}", doc.elements);
    assert!(!all.contains("png") && !all.contains("image"), "{all}");
}

#[test]
fn docx_chunks_follow_its_sections() {
    let doc = parse_file(&fixture("report.docx")).unwrap();
    let chunks = chunk_document(&doc, ChunkOptions::for_model(128), &count).unwrap();
    let table = chunks
        .iter()
        .find(|c| c.kind == ElementKind::Table)
        .unwrap();
    assert_eq!(
        table.text,
        "Quarter | Region | Revenue\nQ1 | Europe | 300\nQ2 | Europe | 450\nTotal |  | 750"
    );
    assert_eq!(table.context, "Annual Report 2024 > Revenue");
    assert_eq!(table.page, Some(1));
    let risks = chunks
        .iter()
        .find(|c| c.text.contains("Currency risk"))
        .unwrap();
    assert_eq!(risks.section, ["Risks"]);
    assert_eq!(risks.page, Some(2));
}

#[test]
fn docx_title_falls_back_to_the_document_properties() {
    let doc = parse_file(&fixture("memo.docx")).unwrap();
    assert_eq!(doc.title, "Memo on travel policy");
    assert_eq!(
        doc.elements[0].block,
        Block::Paragraph("Travel must be booked two weeks ahead.".into())
    );
    // No page breaks at all: pages are unknown.
    assert!(doc.elements.iter().all(|e| e.page.is_none()));
    assert_eq!(doc.elements[2].section, ["Exceptions"]);
}

#[test]
fn broken_or_mislabelled_office_files_fail_with_the_reason() {
    let docx = std::fs::read(fixture("report.docx")).unwrap();
    let msg = parse_error("cut.docx", &docx[..docx.len() / 2]);
    assert!(msg.contains("damaged or truncated"), "{msg}");

    let msg = parse_error("notes.docx", b"Just some text saved with the wrong name.\n");
    assert!(msg.contains("not a zip archive"), "{msg}");

    // A real workbook under a Word name: a zip package without a Word document in it.
    let xlsx = std::fs::read(fixture("workbook.xlsx")).unwrap();
    let msg = parse_error("sheet.docx", &xlsx);
    assert!(
        msg.contains("not a Word document: its main part xl/workbook.xml is a <workbook>"),
        "{msg}"
    );
    // A zip without any Office part.
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    zip.start_file("readme.txt", zip::write::SimpleFileOptions::default())
        .unwrap();
    zip.write_all(b"hello").unwrap();
    let bytes = zip.finish().unwrap().into_inner();
    let msg = parse_error("plain-zip.docx", &bytes);
    assert!(
        msg.contains("no word/document.xml in the package: not a Word document"),
        "{msg}"
    );

    // A Word document under an Excel name.
    let msg = parse_error("report.xlsx", &docx);
    assert!(msg.contains("not a readable Excel workbook"), "{msg}");

    let msg = parse_error("notes.xlsx", b"a,b\n1,2\n");
    assert!(msg.contains("not a spreadsheet"), "{msg}");

    let msg = parse_error("cut.xlsx", &xlsx[..xlsx.len() - 100]);
    assert!(msg.contains("damaged or truncated"), "{msg}");

    let xls = std::fs::read(fixture("legacy.xls")).unwrap();
    let msg = parse_error("old.docx", &xls);
    assert!(msg.contains("compound file"), "{msg}");
    let msg = parse_error("cut.xls", &xls[..1024]);
    assert!(msg.contains("Excel 97–2003"), "{msg}");

    // A corrupt main part: the XML error names the part and the line.
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    zip.start_file(
        "word/document.xml",
        zip::write::SimpleFileOptions::default(),
    )
    .unwrap();
    zip.write_all(b"<?xml version=\"1.0\"?>\n<w:document xmlns:w=\"x\">\n<w:body></w:document>")
        .unwrap();
    let bytes = zip.finish().unwrap().into_inner();
    let msg = parse_error("bad.docx", &bytes);
    assert!(
        msg.starts_with("bad.docx:3: word/document.xml: malformed XML"),
        "{msg}"
    );
}

#[test]
fn a_zip_bomb_is_refused_whatever_sizes_it_declares() {
    // 300 MiB of zeros deflate to about 300 KiB: over the 256 MiB cap on what a package may
    // unpack to.
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    zip.start_file("word/document.xml", options).unwrap();
    let block = vec![0u8; 1 << 20];
    for _ in 0..300 {
        zip.write_all(&block).unwrap();
    }
    let honest = zip.finish().unwrap().into_inner();
    assert!(honest.len() < 2 << 20, "{} bytes", honest.len());
    // The same archive declaring 1000 bytes unpacked (local header and central directory):
    // refused while inflating, not by trusting the declaration (zip stops at the declared
    // size; our own count of inflated bytes stands behind it).
    let mut lying = honest.clone();
    lying[22..26].copy_from_slice(&1000u32.to_le_bytes());
    let central = lying.windows(4).rposition(|w| w == b"PK\x01\x02").unwrap();
    lying[central + 24..central + 28].copy_from_slice(&1000u32.to_le_bytes());
    for name in ["bomb.docx", "bomb.xlsx"] {
        let msg = parse_error(name, &honest);
        assert!(
            msg.contains("more than 256 MiB") && msg.contains("zip bomb"),
            "{msg}"
        );
        let msg = parse_error(name, &lying);
        assert!(
            msg.contains("word/document.xml: cannot unpack")
                && msg.contains("larger than its declared uncompressed size"),
            "{msg}"
        );
    }
}

#[test]
fn xlsx_sheets_are_sections_with_one_table_each() {
    let doc = parse_file(&fixture("workbook.xlsx")).unwrap();
    assert_eq!(doc.title, "Finance workbook");
    // The empty third sheet adds nothing.
    assert_eq!(doc.elements.len(), 3);
    let caption = &doc.elements[0];
    assert_eq!(
        caption.block,
        Block::Paragraph("Quarterly revenue (USD thousands)".into())
    );
    assert_eq!(caption.section, ["Revenue"]);
    let revenue = table(&doc.elements[1]);
    assert_eq!(doc.elements[1].section, ["Revenue"]);
    // Column C, empty everywhere, is gone; dates are ISO dates, floats have no noise.
    assert_eq!(
        revenue.header,
        ["Quarter", "Closed on", "Revenue", "Growth"]
    );
    assert_eq!(
        revenue.rows,
        [
            ["Q1", "2024-03-31", "1234.5", "0.1"],
            ["Q2", "2024-06-30", "1500", "0.215"],
            ["Q3", "2024-09-30 18:00", "1620.25", "0.08"],
        ]
    );
    let staff = table(&doc.elements[2]);
    assert_eq!(doc.elements[2].section, ["Staff"]);
    // A value under an empty header cell gets its column letter as header.
    assert_eq!(staff.header, ["Name", "Remote", "Starts at", "D"]);
    let expected: [&[&str]; 2] = [
        &["Ana", "TRUE", "09:30", "note"],
        &["Luis", "FALSE", "08:00"],
    ];
    assert_eq!(staff.rows, expected);

    let chunks = chunk_document(&doc, ChunkOptions::for_model(128), &count).unwrap();
    let staff_chunk = chunks.iter().find(|c| c.section == ["Staff"]).unwrap();
    assert_eq!(staff_chunk.kind, ElementKind::Table);
    assert_eq!(staff_chunk.context, "Finance workbook > Staff");
    assert!(
        staff_chunk
            .text
            .starts_with("Name | Remote | Starts at | D\n")
    );
}

#[test]
fn xls_from_excel_97_is_read_too() {
    let doc = parse_file(&fixture("legacy.xls")).unwrap();
    assert_eq!(doc.title, "legacy");
    assert_eq!(doc.elements.len(), 1);
    assert_eq!(doc.elements[0].section, ["Budget"]);
    let t = table(&doc.elements[0]);
    assert_eq!(t.header, ["Item", "Amount", "Due"]);
    assert_eq!(
        t.rows,
        [
            ["Servers", "12000", "2024-01-15"],
            ["Licenses", "3499.99", "2024-02-01"]
        ]
    );
}

#[test]
fn office_files_are_ingested_and_found_by_section_page_and_kind() {
    use forja_rag::{Filters, IngestOptions, SearchMode, SearchQuery, Store, ingest, search};
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("rag.sqlite")).unwrap();
    let e = common::BagOfWords::default();
    let dir = fixture("");
    // The office documents of the fixtures folder (the PDFs have tests of their own).
    let options = IngestOptions {
        exclude: vec!["pdf/**".into()],
        ..Default::default()
    };
    let report = ingest(&store, "office", &[dir], &e, &options, &mut |_| {}).unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(report.added, 5);
    let find = |text: &str, kind: Option<ElementKind>| {
        let q = SearchQuery {
            text: text.into(),
            mode: SearchMode::Bm25,
            k: 1,
            filters: Filters {
                kind,
                ..Filters::default()
            },
        };
        search(&store, "office", &q, None).unwrap().remove(0)
    };
    let hit = find("currency risk", None);
    assert!(hit.source.ends_with("report.docx"));
    assert_eq!(
        (hit.section.clone(), hit.page),
        (vec!["Risks".into()], Some(2))
    );
    let hit = find("licenses", Some(ElementKind::Table));
    assert!(hit.source.ends_with("legacy.xls"));
    assert_eq!(hit.section, ["Budget"]);
    assert!(
        hit.text.contains("Licenses | 3499.99 | 2024-02-01"),
        "{}",
        hit.text
    );
    let hit = find("EarningsPerShareBasic", Some(ElementKind::Table));
    assert!(hit.source.ends_with("acme-2023.xml"));
    assert_eq!(hit.title, "Acme Widgets, Inc. 10-K 2023-12-31");
}

/// A document saved by Microsoft Word, installed by scripts/fetch-testdata.
fn word_made(name: &str) -> PathBuf {
    let dir = match std::env::var_os("FORJA_TESTDATA") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/forja-testdata"),
    };
    let p = dir.join("word-docs").join(name);
    assert!(
        p.is_file(),
        "{} is missing: run scripts/fetch-testdata",
        p.display()
    );
    p
}

#[test]
fn word_made_documents_carry_words_pages_and_merged_cells() {
    // Word's last layout broke pages inside paragraphs: an element is on the page it starts on.
    let doc = parse_file(&word_made("par-rendered-page-breaks.docx")).unwrap();
    let pages: Vec<(String, Option<u32>)> = doc
        .elements
        .iter()
        .map(|e| match &e.block {
            Block::Paragraph(p) => (p.clone(), e.page),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        pages,
        [
            ("No page breaks".to_string(), Some(1)),
            (
                "Page break here>><<followed by more text.".to_string(),
                Some(1)
            ),
            (
                "Page break in>><<this hyperlink and another one here>><<with text following"
                    .to_string(),
                Some(2)
            ),
            ("Two page>><<breaks>><<in one run.".to_string(), Some(4)),
        ]
    );

    // Horizontally merged cells fill their first column, vertically merged ones repeat.
    let doc = parse_file(&word_made("tbl-cell-access.docx")).unwrap();
    let tables: Vec<&Table> = doc.elements.iter().map(table).collect();
    assert_eq!(tables.len(), 4);
    for t in &tables {
        assert_eq!(t.header, ["1", "2", "3"]);
    }
    assert_eq!(tables[0].rows, [["4", "5", "6"], ["7", "8", "9"]]);
    assert_eq!(tables[1].rows, [["4", "", "6"], ["7", "8", "9"]]);
    assert_eq!(tables[2].rows, [["4", "5", "6"], ["7", "5", "9"]]);
    assert_eq!(tables[3].rows, [["4", "", "6"], ["4", "", "9"]]);

    // Paragraphs and tables interleaved across sections and pages, in reading order.
    let doc = parse_file(&word_made("sct-inner-content.docx")).unwrap();
    let kinds: String = doc
        .elements
        .iter()
        .map(|e| match &e.block {
            Block::Paragraph(p) => p.clone(),
            Block::Table(t) => format!("[{}]", t.header_line()),
            other => panic!("{other:?}"),
        })
        .collect::<Vec<_>>()
        .join(" ");
    assert!(kinds.starts_with("P1 [T2 | ] P3 T4 P5"), "{kinds}");
}
