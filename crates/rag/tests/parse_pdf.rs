//! PDFs written by real producers (reportlab, see scripts/fixtures/pdf_fixtures.py; a CUAD
//! contract converted from HTML by its publisher) read through pdfium — installed by
//! scripts/fetch-testdata and named by FORJA_PDFIUM — and through the built-in extractor; broken,
//! encrypted and scanned files are clear per-file errors and an ingest goes on past them.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Once;

use forja_rag::parse::pdf::{parse_fallback, pdfium_missing};
use forja_rag::{
    Block, Element, ElementKind, Filters, IngestEvent, IngestOptions, SearchMode, SearchQuery,
    Store, ingest, parse_bytes, parse_file, search,
};

const CONTRACT: &str = "cuad-corporate-sponsorship-agreement.pdf";
const AMENDMENT: &str = "cuad-distribution-agreement-amendment.pdf";

fn fixture(name: &str) -> PathBuf {
    forja_testkit::fixtures_dir()
        .join("documents/pdf")
        .join(name)
}

/// Points FORJA_PDFIUM at the library scripts/fetch-testdata installs (before anything in this
/// test binary binds pdfium) and checks that pdfium is the one in use.
fn with_pdfium() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let lib = forja_testkit::testdata_dir().join("pdfium/libpdfium.so");
        assert!(
            lib.is_file(),
            "{} is missing: run scripts/fetch-testdata",
            lib.display()
        );
        // SAFETY: set once, before any thread of this binary reads FORJA_PDFIUM (every test
        // calls this first; `Once` makes the others wait).
        unsafe { std::env::set_var("FORJA_PDFIUM", lib) };
    });
    assert_eq!(pdfium_missing(), None);
}

fn text(e: &Element) -> String {
    match &e.block {
        Block::Heading { text, .. } | Block::Paragraph(text) | Block::ListItem(text) => {
            text.clone()
        }
        Block::Code(t) => t.clone(),
        Block::Table(t) => {
            let rows = (0..t.rows.len()).map(|i| t.row_line(i));
            std::iter::once(t.header_line())
                .chain(rows)
                .collect::<Vec<_>>()
                .join("\n")
        }
    }
}

/// (kind, text, section path joined by `/`, page) of every element.
fn outline(elements: &[Element]) -> Vec<(ElementKind, String, String, Option<u32>)> {
    elements
        .iter()
        .map(|e| (e.block.kind(), text(e), e.section.join("/"), e.page))
        .collect()
}

/// The non-blank characters of each page, in order: what two extractors must agree on.
fn page_chars(elements: &[Element], pages: u32) -> Vec<String> {
    (1..=pages)
        .map(|p| {
            elements
                .iter()
                .filter(|e| e.page == Some(p))
                .flat_map(|e| text(e).chars().collect::<Vec<_>>())
                .filter(|c| !c.is_whitespace() && *c != '|')
                .collect()
        })
        .collect()
}

const FILLER: &str = "Every visitor reads this section before the first day in the field, \
because the station is remote and help can be hours away. The rules below were written after \
real incidents and are reviewed by the station manager at the start of each season.";

#[test]
fn pdfium_reads_headings_sections_pages_and_the_title() {
    with_pdfium();
    let doc = parse_file(&fixture("handbook.pdf")).unwrap();
    assert_eq!(doc.title, "Field Station Handbook");
    assert_eq!(
        doc.date,
        Some(946_684_800),
        "CreationDate D:20000101000000+00'00'"
    );
    use ElementKind::*;
    let top = "Field Station Handbook";
    let expected = vec![
        (Heading, top.to_string(), String::new(), Some(1)),
        (
            Paragraph,
            "This handbook describes how the Lakeside field station works: arriving, staying \
             safe, and leaving the site as you found it."
                .to_string(),
            top.to_string(),
            Some(1),
        ),
        (Heading, "Arrival".to_string(), top.to_string(), Some(1)),
        (
            Paragraph,
            format!(
                "The station gate opens at seven in the morning. Sign the visitor log in the \
                 main hall and collect a radio from the front desk. {FILLER}"
            ),
            format!("{top}/Arrival"),
            Some(1),
        ),
        (
            ListItem,
            "Bring waterproof boots and a head torch.".to_string(),
            format!("{top}/Arrival"),
            Some(1),
        ),
        (
            ListItem,
            "Keys are returned to the front desk every evening.".to_string(),
            format!("{top}/Arrival"),
            Some(1),
        ),
        (
            Heading,
            "Safety".to_string(),
            format!("{top}/Arrival"),
            Some(2),
        ),
        (
            Heading,
            "Weather".to_string(),
            format!("{top}/Safety"),
            Some(2),
        ),
        (
            Paragraph,
            format!(
                "Storms arrive quickly over the western ridge. When the siren sounds twice, \
                 every team returns to the main hall within thirty minutes. {FILLER}"
            ),
            format!("{top}/Safety/Weather"),
            Some(2),
        ),
        (
            Heading,
            "Wildlife".to_string(),
            format!("{top}/Safety/Weather"),
            Some(2),
        ),
        (
            Paragraph,
            "Moose cross the northern trail at dusk. Keep a distance of at least fifty metres \
             and never walk between a cow and her calf."
                .to_string(),
            format!("{top}/Safety/Wildlife"),
            Some(2),
        ),
        (
            Heading,
            "Departure".to_string(),
            format!("{top}/Safety/Wildlife"),
            Some(3),
        ),
        (
            Paragraph,
            "Before leaving, clean the laboratory benches, return the radio, and record the \
             samples you collected in the station inventory."
                .to_string(),
            "Departure".to_string(),
            Some(3),
        ),
        (
            Table,
            "Room | Checkout | Deposit\nCabin A | 10:00 | 120 EUR\nCabin B | 11:30 | 95 EUR\n\
             Dormitory | 09:00 | 40 EUR"
                .to_string(),
            "Departure".to_string(),
            Some(3),
        ),
        (
            Paragraph,
            "Late departures are charged one extra night.".to_string(),
            "Departure".to_string(),
            Some(3),
        ),
    ];
    assert_eq!(outline(&doc.elements), expected);
    let levels: Vec<u8> = doc
        .elements
        .iter()
        .filter_map(|e| match e.block {
            Block::Heading { level, .. } => Some(level),
            _ => None,
        })
        .collect();
    assert_eq!(levels, [1, 2, 2, 3, 3, 1]);
}

#[test]
fn pdfium_reads_a_real_contract() {
    with_pdfium();
    let doc = parse_file(&fixture(CONTRACT)).unwrap();
    // No metadata title: the bold first line is the heading and the title.
    assert_eq!(doc.title, "CORPORATE SPONSORSHIP AGREEMENT");
    assert_eq!(
        doc.elements[0].block,
        Block::Heading {
            level: 1,
            text: "CORPORATE SPONSORSHIP AGREEMENT".into()
        }
    );
    let find = |needle: &str| {
        doc.elements
            .iter()
            .find(|e| text(e).contains(needle))
            .unwrap_or_else(|| panic!("{needle:?} not found in {:#?}", outline(&doc.elements)))
    };
    let parties = find("is entered into as of May 18, 2010");
    assert_eq!(parties.page, Some(1));
    assert_eq!(parties.section, ["CORPORATE SPONSORSHIP AGREEMENT"]);
    // Lines of one paragraph are joined, across pdfium's line breaks.
    assert!(
        text(parties).contains("Phoenix Performance, LLC, 481 Schuylkill Road, Phoenixville"),
        "{}",
        text(parties)
    );
    assert_eq!(find("6. Grant of License").page, Some(2));
    let law = find("governed and construed according to the laws of the State of New York");
    assert_eq!(law.page, Some(3));
    assert_eq!(law.block.kind(), ElementKind::Paragraph);
    // Every page has text; no-break spaces and control characters are gone.
    for p in 1..=3 {
        assert!(doc.elements.iter().any(|e| e.page == Some(p)), "page {p}");
    }
    assert!(doc.elements.iter().all(|e| {
        let t = text(e);
        !t.is_empty()
            && !t
                .chars()
                .any(|c| (c.is_control() && c != '\n') || c == '\u{a0}')
    }));
}

#[test]
fn the_fallback_reads_the_same_text_page_by_page() {
    with_pdfium();
    // The amendment's text is inside form XObjects the pages paint.
    for (name, pages) in [("handbook.pdf", 3), (CONTRACT, 3), (AMENDMENT, 1)] {
        let path = fixture(name);
        let bytes = std::fs::read(&path).unwrap();
        let pdfium = parse_bytes(&path, &bytes).unwrap();
        let parsed = parse_fallback(&path, &bytes).unwrap();
        let (title, fallback) = (parsed.title, parsed.elements);
        // Both read the information dictionary's creation date.
        assert_eq!(parsed.date, pdfium.date, "{name}");
        assert!(fallback.iter().all(|e| e.section.is_empty()));
        assert!(
            fallback
                .iter()
                .all(|e| e.block.kind() != ElementKind::Heading)
        );
        assert_eq!(
            page_chars(&fallback, pages),
            page_chars(&pdfium.elements, pages),
            "{name}"
        );
        assert!(fallback.iter().all(|e| e.page.is_some_and(|p| p <= pages)));
        let expected_title = (name == "handbook.pdf").then(|| "Field Station Handbook".into());
        assert_eq!(title, expected_title, "{name}");
        // reportlab wrote D:20000101000000+00'00' (its invariant mode); the amendment was
        // created 2020-11-30T08:45:14-08:00; the contract has no date.
        let expected_date = match name {
            "handbook.pdf" => Some(946_684_800),
            AMENDMENT => Some(1_606_754_714),
            _ => None,
        };
        assert_eq!(parsed.date, expected_date, "{name}");
    }
    let handbook = parse_fallback(
        Path::new("handbook.pdf"),
        &std::fs::read(fixture("handbook.pdf")).unwrap(),
    )
    .unwrap()
    .elements;
    let items: Vec<String> = handbook
        .iter()
        .filter(|e| e.block.kind() == ElementKind::ListItem)
        .map(text)
        .collect();
    assert_eq!(
        items,
        [
            "Bring waterproof boots and a head torch.",
            "Keys are returned to the front desk every evening."
        ]
    );
    // The page numbers of the footers are not text of the pages.
    assert!(
        handbook
            .iter()
            .all(|e| !text(e).starts_with(char::is_numeric))
    );
}

#[test]
fn encrypted_scanned_and_broken_pdfs_are_clear_errors_with_either_extractor() {
    with_pdfium();
    let handbook = std::fs::read(fixture("handbook.pdf")).unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "handbook-encrypted.pdf",
            std::fs::read(fixture("handbook-encrypted.pdf")).unwrap(),
            "handbook-encrypted.pdf: encrypted PDF: it needs a password",
        ),
        (
            "scanned.pdf",
            std::fs::read(fixture("scanned.pdf")).unwrap(),
            "scanned.pdf: no text layer on any of its 1 page(s): a scanned or image-only PDF \
             (forja does no OCR",
        ),
        (
            "truncated.pdf",
            handbook[..handbook.len() / 3].to_vec(),
            "truncated.pdf: ",
        ),
        (
            "garbage.pdf",
            b"%PDF-1.7\nthis is no PDF at all\n".to_vec(),
            "garbage.pdf: not a readable PDF (corrupt or truncated)",
        ),
        ("empty.pdf", Vec::new(), "empty.pdf: not a readable PDF"),
    ];
    for (name, bytes, expected) in cases {
        let pdfium = parse_bytes(Path::new(name), &bytes)
            .unwrap_err()
            .to_string();
        assert!(pdfium.starts_with(expected), "pdfium: {pdfium}");
        let fallback = parse_fallback(Path::new(name), &bytes)
            .unwrap_err()
            .to_string();
        assert!(fallback.starts_with(expected), "fallback: {fallback}");
    }
}

#[test]
fn an_ingest_goes_on_past_broken_pdfs() {
    with_pdfium();
    let tmp = tempfile::tempdir().unwrap();
    let docs = tmp.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    for name in [
        "handbook.pdf",
        "handbook-encrypted.pdf",
        "scanned.pdf",
        CONTRACT,
    ] {
        std::fs::copy(fixture(name), docs.join(name)).unwrap();
    }
    let handbook = std::fs::read(fixture("handbook.pdf")).unwrap();
    std::fs::write(docs.join("truncated.pdf"), &handbook[..handbook.len() / 3]).unwrap();
    std::fs::write(
        docs.join("notes.md"),
        "# Notes\n\nThe boat leaves at noon.\n",
    )
    .unwrap();

    let store = Store::open(&tmp.path().join("rag.sqlite")).unwrap();
    let e = common::BagOfWords::default();
    let mut notices = 0;
    let mut failed = Vec::new();
    let r = ingest(
        &store,
        "docs",
        std::slice::from_ref(&docs),
        &e,
        &IngestOptions::default(),
        &mut |ev| match ev {
            IngestEvent::Notice { .. } => notices += 1,
            IngestEvent::Failed { path, .. } => failed.push(path.file_name().unwrap().to_owned()),
            _ => {}
        },
    )
    .unwrap();
    assert_eq!(r.added, 3, "{:?}", r.failed);
    assert_eq!(r.failed.len(), 3, "{:?}", r.failed);
    assert_eq!(
        failed,
        ["handbook-encrypted.pdf", "scanned.pdf", "truncated.pdf"]
    );
    assert_eq!((notices, r.notices.len()), (0, 0), "pdfium is in use");

    let query = SearchQuery {
        text: "moose northern trail calf".into(),
        mode: SearchMode::Bm25,
        k: 1,
        filters: Filters::default(),
    };
    let hits = search(&store, "docs", &query, None).unwrap();
    let hit = &hits[0];
    assert!(hit.source.ends_with("handbook.pdf"), "{hit:?}");
    assert_eq!(hit.title, "Field Station Handbook");
    assert_eq!(hit.page, Some(2));
    assert_eq!(
        hit.section,
        ["Field Station Handbook", "Safety", "Wildlife"]
    );
    assert!(hit.text.contains("Moose cross the northern trail at dusk."));
}
