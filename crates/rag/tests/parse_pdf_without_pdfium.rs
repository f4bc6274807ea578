//! Without pdfium (FORJA_PDFIUM names a file that is not there) PDFs are read by the built-in
//! extractor and an ingest says once, not per file, why and how to install pdfium.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

mod common;

use std::sync::Once;

use forja_rag::parse::pdf::pdfium_missing;
use forja_rag::{Block, ElementKind, IngestEvent, IngestOptions, Store, ingest, parse_file};

fn without_pdfium() -> &'static str {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: set once, before any thread of this binary reads FORJA_PDFIUM (every test
        // calls this first; `Once` makes the others wait).
        unsafe { std::env::set_var("FORJA_PDFIUM", "/nonexistent/forja/libpdfium.so") };
    });
    pdfium_missing().expect("pdfium must not be found")
}

fn fixture(name: &str) -> std::path::PathBuf {
    forja_testkit::fixtures_dir()
        .join("documents/pdf")
        .join(name)
}

#[test]
fn the_reason_names_the_path_tried_and_the_installer() {
    let why = without_pdfium();
    assert!(
        why.starts_with(
            "pdfium could not be loaded from FORJA_PDFIUM=/nonexistent/forja/libpdfium.so: "
        ),
        "{why}"
    );
    assert!(why.contains("scripts/install-pdfium"), "{why}");
}

#[test]
fn pdfs_are_read_by_the_built_in_extractor() {
    without_pdfium();
    let doc = parse_file(&fixture("handbook.pdf")).unwrap();
    assert_eq!(doc.title, "Field Station Handbook");
    assert!(doc.elements.iter().all(|e| e.section.is_empty()));
    assert!(
        doc.elements
            .iter()
            .all(|e| e.block.kind() != ElementKind::Heading)
    );
    let moose = doc
        .elements
        .iter()
        .find(|e| match &e.block {
            Block::Paragraph(t) => t.contains("Moose cross the northern trail"),
            _ => false,
        })
        .unwrap();
    assert_eq!(moose.page, Some(2));
}

#[test]
fn an_ingest_notes_the_missing_pdfium_once() {
    let why = without_pdfium();
    let tmp = tempfile::tempdir().unwrap();
    let docs = tmp.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    for name in [
        "handbook.pdf",
        "cuad-corporate-sponsorship-agreement.pdf",
        "scanned.pdf",
    ] {
        std::fs::copy(fixture(name), docs.join(name)).unwrap();
    }
    let store = Store::open(&tmp.path().join("rag.sqlite")).unwrap();
    let e = common::BagOfWords::default();
    let mut notices = Vec::new();
    let r = ingest(
        &store,
        "docs",
        std::slice::from_ref(&docs),
        &e,
        &IngestOptions::default(),
        &mut |ev| {
            if let IngestEvent::Notice { message } = ev {
                notices.push(message.to_string());
            }
        },
    )
    .unwrap();
    assert_eq!(notices, [why]);
    assert_eq!(r.notices, [why]);
    assert_eq!(r.added, 2, "{:?}", r.failed);
    assert_eq!(r.failed.len(), 1);
    assert!(
        r.failed[0].1.contains("scanned.pdf: no text layer"),
        "{:?}",
        r.failed
    );
    assert!(r.chunks > 2);
}
