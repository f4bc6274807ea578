//! Without FORJA_PDFIUM, pdfium is found in `$FORJA_HOME/lib`, where scripts/install-pdfium puts
//! it by default.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

use forja_rag::parse::pdf::pdfium_missing;
use forja_rag::{ElementKind, parse_file};

#[test]
fn pdfium_is_found_in_the_forja_home_lib_folder() {
    let lib = forja_testkit::testdata_dir().join("pdfium/libpdfium.so");
    assert!(
        lib.is_file(),
        "{} is missing: run scripts/fetch-testdata",
        lib.display()
    );
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("lib")).unwrap();
    std::fs::copy(&lib, home.path().join("lib/libpdfium.so")).unwrap();
    // SAFETY: the only test of this binary; nothing else reads the environment meanwhile.
    unsafe {
        std::env::remove_var("FORJA_PDFIUM");
        std::env::set_var("FORJA_HOME", home.path());
    }
    assert_eq!(pdfium_missing(), None);
    let doc =
        parse_file(&forja_testkit::fixtures_dir().join("documents/pdf/handbook.pdf")).unwrap();
    // Headings come from pdfium's fonts; the built-in extractor has none.
    assert_eq!(
        doc.elements
            .iter()
            .filter(|e| e.block.kind() == ElementKind::Heading)
            .count(),
        6
    );
}
