//! XML read generically (sections, records as tables, fields), XBRL instances as a table of
//! facts, and XML that must not hurt: entity bombs, external entities, other encodings,
//! malformed and truncated files.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

mod common;

use std::path::{Path, PathBuf};

use forja_rag::{
    Block, ChunkOptions, ElementKind, RagError, chunk_document, parse_bytes, parse_file,
};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/documents")
        .join(name)
}

fn count(t: &str) -> forja_rag::Result<usize> {
    Ok(common::words(t).count() + 2)
}

#[test]
fn xbrl_facts_become_one_table_with_contexts_and_units_resolved() {
    let doc = parse_file(&fixture("acme-2023.xml")).unwrap();
    assert_eq!(doc.title, "Acme Widgets, Inc. 10-K 2023-12-31");
    // Dated by the period it reports on (dei:DocumentPeriodEndDate).
    assert_eq!(doc.date, Some(1_703_980_800));
    let Block::Table(t) = &doc.elements[0].block else {
        panic!("{:?}", doc.elements[0])
    };
    assert_eq!(
        t.header,
        [
            "concept",
            "period",
            "entity",
            "dimensions",
            "unit",
            "decimals",
            "value"
        ]
    );
    let row = |concept: &str, period: &str| -> Vec<String> {
        t.rows
            .iter()
            .find(|r| r[0] == concept && r[1] == period && r[3].is_empty())
            .unwrap_or_else(|| panic!("no {concept} for {period}: {:?}", t.rows))
            .clone()
    };
    let fy = "2023-01-01 to 2023-12-31";
    assert_eq!(
        row("us-gaap:Revenues", fy),
        [
            "us-gaap:Revenues",
            fy,
            "0000123456",
            "",
            "USD",
            "-6",
            "1234000000"
        ]
    );
    assert_eq!(
        row("us-gaap:Revenues", "2022-01-01 to 2022-12-31")[6],
        "1100000000"
    );
    assert_eq!(
        row("us-gaap:EarningsPerShareBasic", fy)[4..],
        ["USD/shares", "2", "1.96"]
    );
    assert_eq!(row("us-gaap:Assets", "2023-12-31")[6], "5010000000");
    assert_eq!(
        row("dei:EntityCommonStockSharesOutstanding", "2023-12-31")[4..],
        ["shares", "INF", "50000000"]
    );
    assert_eq!(row("us-gaap:GoodwillImpairmentLoss", fy)[6], "(nil)");
    let segment: Vec<&Vec<String>> = t.rows.iter().filter(|r| !r[3].is_empty()).collect();
    assert_eq!(segment.len(), 1);
    assert_eq!(
        segment[0][3],
        "us-gaap:StatementBusinessSegmentsAxis=acme:CloudMember"
    );
    assert_eq!(segment[0][6], "456000000");
    // 12 short facts in the table; the text block follows as paragraphs, its HTML unescaped
    // and reduced to text; the footnote link and schema reference leave no trace.
    assert_eq!(t.rows.len(), 12);
    let section = format!("us-gaap:RevenueRecognitionPolicyTextBlock ({fy})");
    let paras: Vec<&str> = doc.elements[1..]
        .iter()
        .map(|e| {
            assert_eq!(e.section, [section.as_str()]);
            match &e.block {
                Block::Paragraph(p) => p.as_str(),
                other => panic!("{other:?}"),
            }
        })
        .collect();
    assert_eq!(paras.len(), 3);
    assert_eq!(paras[0], "Revenue Recognition");
    assert!(paras[2].starts_with("Cloud subscriptions are recognized ratably"));
    let all = format!("{:?}", doc.elements);
    assert!(
        !all.contains("acquired subsidiary") && !all.contains(".xsd") && !all.contains("<p>"),
        "{all}"
    );

    // Big fact tables are cut by rows, each part under the header.
    let options = ChunkOptions {
        max_tokens: 64,
        overlap_tokens: 8,
    };
    let chunks = chunk_document(&doc, options, &count).unwrap();
    let tables: Vec<_> = chunks
        .iter()
        .filter(|c| c.kind == ElementKind::Table)
        .collect();
    assert!(tables.len() > 1);
    for c in tables {
        assert!(
            c.text
                .starts_with("concept | period | entity | dimensions | unit | decimals | value\n")
        );
    }
}

const CATALOG: &str = r#"<?xml version="1.0"?>
<!-- a product catalog -->
<catalog xmlns="urn:example:catalog">
  <title>Spring catalog</title>
  <section id="tools">
    <title>Garden tools</title>
    <intro>Everything for the garden, shipped within two working days from our warehouse.</intro>
    <product sku="T-1"><name>Rake</name><price currency="EUR">12.50</price></product>
    <product sku="T-2"><name>Spade</name><price currency="EUR">19.90</price><tag>steel</tag><tag>new</tag></product>
    <note>Prices <b>include</b> VAT.</note>
  </section>
  <contact>
    <email>shop@example.com</email>
    <phone kind="mobile">+34 600 000 000</phone>
  </contact>
</catalog>
"#;

#[test]
fn generic_xml_keeps_sections_records_and_fields() {
    let doc = parse_bytes(Path::new("catalog.xml"), CATALOG.as_bytes()).unwrap();
    assert_eq!(doc.title, "Spring catalog");
    let got: Vec<(String, Vec<String>)> = doc
        .elements
        .iter()
        .map(|e| {
            let text = match &e.block {
                Block::Heading { level, text } => format!("h{level} {text}"),
                Block::Paragraph(p) => p.clone(),
                Block::Table(t) => format!("table {} / {:?}", t.header_line(), t.rows),
                other => panic!("{other:?}"),
            };
            (text, e.section.clone())
        })
        .collect();
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(
        got,
        [
            ("h1 Garden tools".into(), s(&[])),
            (
                "Everything for the garden, shipped within two working days from our warehouse."
                    .into(),
                s(&["Garden tools"])
            ),
            (
                "table sku | name | price | tag / [[\"T-1\", \"Rake\", \"12.50\"], \
                 [\"T-2\", \"Spade\", \"19.90\", \"steel; new\"]]"
                    .into(),
                s(&["Garden tools"])
            ),
            ("Prices include VAT.".into(), s(&["Garden tools"])),
            ("email: shop@example.com".into(), s(&["contact"])),
            (
                "phone: +34 600 000 000 (kind mobile)".into(),
                s(&["contact"])
            ),
        ]
    );
}

#[test]
fn entities_are_never_expanded() {
    // A billion-laughs bomb and an external entity: neither is expanded nor read.
    let bomb = r#"<?xml version="1.0"?>
<!DOCTYPE lolz [
  <!ENTITY lol "lol">
  <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
  <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
  <!ENTITY lol9 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
  <!ENTITY secret SYSTEM "file:///etc/passwd">
]>
<doc><p>laughs: &lol9; and &secret; &amp; &#233;t&#xE9;</p></doc>
"#;
    let doc = parse_bytes(Path::new("lolz.xml"), bomb.as_bytes()).unwrap();
    assert_eq!(
        doc.elements
            .iter()
            .map(|e| e.block.clone())
            .collect::<Vec<_>>(),
        [Block::Paragraph(
            "p: laughs: &lol9; and &secret; & été".into()
        )]
    );
}

#[test]
fn xml_in_other_encodings_is_decoded() {
    let latin1 =
        b"<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><doc><city>M\xe1laga</city></doc>";
    let doc = parse_bytes(Path::new("latin1.xml"), latin1).unwrap();
    assert_eq!(
        doc.elements[0].block,
        Block::Paragraph("city: Málaga".into())
    );

    let mut utf16 = vec![0xFF, 0xFE];
    for unit in "<doc><city>Köln</city></doc>".encode_utf16() {
        utf16.extend_from_slice(&unit.to_le_bytes());
    }
    let doc = parse_bytes(Path::new("utf16.xml"), &utf16).unwrap();
    assert_eq!(doc.elements[0].block, Block::Paragraph("city: Köln".into()));

    // A UTF-8 file whose declaration claims UTF-16 (a common mislabel) is read as UTF-8.
    let mislabelled = "<?xml version=\"1.0\" encoding=\"UTF-16\"?><doc><city>Zürich</city></doc>";
    let doc = parse_bytes(Path::new("mislabelled.xml"), mislabelled.as_bytes()).unwrap();
    assert_eq!(
        doc.elements[0].block,
        Block::Paragraph("city: Zürich".into())
    );
}

#[test]
fn malformed_xml_fails_with_file_and_line() {
    let err = |name: &str, text: &str| {
        let e = parse_bytes(Path::new(name), text.as_bytes()).unwrap_err();
        assert!(matches!(e, RagError::Parse { .. }), "{e:?}");
        e.to_string()
    };
    let msg = err("bad.xml", "<doc>\n<a>one</a>\n<b>two</a>\n</doc>");
    assert!(msg.starts_with("bad.xml:3: malformed XML"), "{msg}");
    let msg = err("cut.xml", "<doc>\n<a>one</a>\n<b>tw");
    assert!(msg.starts_with("cut.xml:3:"), "{msg}");
    assert!(msg.contains("truncated"), "{msg}");
    let msg = err("empty.xml", "<?xml version=\"1.0\"?>\n<!-- nothing -->\n");
    assert_eq!(msg, "empty.xml: no XML element in the file");
    let deep = "<a>".repeat(300) + &"</a>".repeat(300);
    let msg = err("deep.xml", &deep);
    assert!(msg.contains("nested deeper than 256 levels"), "{msg}");
    let e = parse_bytes(
        Path::new("x.xml"),
        b"<?xml version=\"1.0\" encoding=\"klingon\"?><a/>",
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("unknown encoding \"klingon\""),
        "{e}"
    );
}
