//! Parsing Markdown, HTML, CSV and text into structured documents, and cutting them into chunks.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

mod common;

use std::path::Path;

use forja_rag::{Block, ChunkOptions, ElementKind, RagError, chunk_document, parse_bytes};

fn count(t: &str) -> forja_rag::Result<usize> {
    Ok(common::words(t).count() + 2)
}

const MD: &str = "# Annual report

Intro paragraph about the company.

## Revenue

Revenue grew by ten percent.

| Quarter | Revenue |
|---------|---------|
| Q1      | 100     |
| Q2      | 120     |

### Regions

- Europe led growth
- Asia followed

```
let x = 1;
```

## Risks

Currency risk remains.
";

#[test]
fn markdown_keeps_headings_sections_tables_lists_and_code() {
    let doc = parse_bytes(Path::new("report.md"), MD.as_bytes()).unwrap();
    assert_eq!(doc.title, "Annual report");
    assert_eq!(doc.date, None);
    assert_eq!(doc.content_hash.len(), 64);
    let kinds: Vec<ElementKind> = doc.elements.iter().map(|e| e.block.kind()).collect();
    use ElementKind::*;
    assert_eq!(
        kinds,
        [
            Heading, Paragraph, Heading, Paragraph, Table, Heading, ListItem, ListItem, Code,
            Heading, Paragraph
        ]
    );
    let table = doc.elements.iter().find_map(|e| match &e.block {
        Block::Table(t) => Some((t, e)),
        _ => None,
    });
    let (t, e) = table.unwrap();
    assert_eq!(t.header, ["Quarter", "Revenue"]);
    assert_eq!(t.rows, [["Q1", "100"], ["Q2", "120"]]);
    assert_eq!(e.section, ["Annual report", "Revenue"]);
    let item = &doc.elements[6];
    assert_eq!(item.block, Block::ListItem("Europe led growth".into()));
    assert_eq!(item.section, ["Annual report", "Revenue", "Regions"]);
    // Spans point into the source.
    let span = item.span.clone().unwrap();
    assert!(MD[span].contains("Europe led growth"));
    let risks = doc.elements.last().unwrap();
    assert_eq!(risks.section, ["Annual report", "Risks"]);
}

#[test]
fn front_matter_and_meta_tags_give_title_and_date() {
    let md = "---\ntitle: \"Board minutes\"\ndate: 2024-03-31\ntags: [a, b]\n---\n\n\
              # Minutes\n\nThe board met.\n";
    let doc = parse_bytes(Path::new("minutes.md"), md.as_bytes()).unwrap();
    assert_eq!(doc.title, "Board minutes");
    assert_eq!(doc.date, forja_rag::date::parse("2024-03-31"));
    // The front matter is metadata, not text to search; spans still point into the file.
    let all = format!("{:?}", doc.elements);
    assert!(!all.contains("tags"), "{all}");
    let para = doc.elements.last().unwrap();
    assert_eq!(md[para.span.clone().unwrap()].trim(), "The board met.");
    // An unreadable date is no date.
    let odd = parse_bytes(Path::new("x.md"), b"---\ndate: someday\n---\n\ntext\n").unwrap();
    assert_eq!(odd.date, None);

    // Publication dates win over modification dates, whatever their order in the page.
    let html = r#"<html><head>
      <meta property="article:modified_time" content="2024-05-01T00:00:00+02:00">
      <meta name="DC.date" content="2023-01-02">
      <meta name="date" content="not a date">
      </head><body><p>News.</p></body></html>"#;
    let doc = parse_bytes(Path::new("news.html"), html.as_bytes()).unwrap();
    assert_eq!(doc.date, forja_rag::date::parse("2023-01-02"));
    let only_modified =
        r#"<meta property="article:modified_time" content="2024-05-01T00:00:00+02:00"><p>x</p>"#;
    let doc = parse_bytes(Path::new("news.html"), only_modified.as_bytes()).unwrap();
    assert_eq!(doc.date, forja_rag::date::parse("2024-04-30T22:00:00Z"));
}

#[test]
fn html_drops_navigation_and_scripts_and_keeps_tables() {
    let html = r#"<html><head><title>Prices</title><style>p{}</style></head><body>
      <nav><a href="/">Home</a> menu links</nav>
      <script>var secret = "do not index";</script>
      <h1>Price list</h1>
      <p>All prices <b>include</b> tax.</p>
      <div>Loose text in a div.</div>
      <h2>Hardware</h2>
      <table><thead><tr><th>Item</th><th>Price</th></tr></thead>
        <tbody><tr><td>GPU</td><td>1500</td></tr><tr><td>CPU</td><td>400</td></tr></tbody></table>
      <ul><li>Free shipping</li></ul>
    </body></html>"#;
    let doc = parse_bytes(Path::new("prices.html"), html.as_bytes()).unwrap();
    assert_eq!(doc.title, "Prices");
    let all = format!("{:?}", doc.elements);
    assert!(
        !all.contains("menu links") && !all.contains("do not index"),
        "{all}"
    );
    assert_eq!(
        doc.elements[1].block,
        Block::Paragraph("All prices include tax.".into())
    );
    assert_eq!(
        doc.elements[2].block,
        Block::Paragraph("Loose text in a div.".into())
    );
    let Block::Table(t) = &doc.elements[4].block else {
        panic!("no table: {all}")
    };
    assert_eq!(t.header, ["Item", "Price"]);
    assert_eq!(t.rows.len(), 2);
    assert_eq!(doc.elements[4].section, ["Price list", "Hardware"]);
    assert_eq!(
        doc.elements[5].block,
        Block::ListItem("Free shipping".into())
    );
}

#[test]
fn csv_rows_keep_their_header_and_bad_files_fail_per_file() {
    let doc = parse_bytes(Path::new("staff.csv"), b"name,role\nAna,CEO\nLuis,CTO\n").unwrap();
    let Block::Table(t) = &doc.elements[0].block else {
        panic!()
    };
    assert_eq!(t.header, ["name", "role"]);
    assert_eq!(t.rows, [["Ana", "CEO"], ["Luis", "CTO"]]);
    assert_eq!(doc.title, "staff");

    // With pdfium or the built-in extractor alike (tests/parse_pdf.rs reads real PDFs).
    let pdf = parse_bytes(Path::new("a.pdf"), b"%PDF-1.7").unwrap_err();
    assert!(matches!(pdf, RagError::Parse { .. }));
    assert!(
        pdf.to_string()
            .starts_with("a.pdf: not a readable PDF (corrupt or truncated)"),
        "{pdf}"
    );
    let bin = parse_bytes(Path::new("junk.txt"), b"ab\ncd\0ef").unwrap_err();
    assert_eq!(
        bin.to_string(),
        "junk.txt:2: binary content (a NUL byte), not a text document"
    );
    let latin1 = parse_bytes(Path::new("x.md"), b"caf\xe9").unwrap_err();
    assert!(latin1.to_string().contains("not UTF-8"), "{latin1}");
}

#[test]
fn plain_text_paragraphs_have_exact_spans() {
    let text = "First para\nstill first.\n\n\nSecond para.\n";
    let doc = parse_bytes(Path::new("notes.txt"), text.as_bytes()).unwrap();
    assert_eq!(doc.elements.len(), 2);
    assert_eq!(&text[doc.elements[1].span.clone().unwrap()], "Second para.");
    assert_eq!(
        doc.elements[0].block,
        Block::Paragraph("First para still first.".into())
    );
}

#[test]
fn chunks_follow_sections_and_carry_their_path() {
    let doc = parse_bytes(Path::new("report.md"), MD.as_bytes()).unwrap();
    let chunks = chunk_document(&doc, ChunkOptions::for_model(128), &count).unwrap();
    let sections: Vec<(String, ElementKind)> = chunks
        .iter()
        .map(|c| (c.section.join("/"), c.kind))
        .collect();
    use ElementKind::*;
    assert_eq!(
        sections,
        [
            ("Annual report".to_string(), Paragraph),
            ("Annual report/Revenue".to_string(), Paragraph),
            ("Annual report/Revenue".to_string(), Table),
            ("Annual report/Revenue/Regions".to_string(), ListItem),
            ("Annual report/Revenue/Regions".to_string(), Code),
            ("Annual report/Risks".to_string(), Paragraph),
        ]
    );
    assert_eq!(chunks[2].text, "Quarter | Revenue\nQ1 | 100\nQ2 | 120");
    assert_eq!(chunks[2].context, "Annual report > Revenue");
    assert_eq!(
        chunks[2].embedding_text(),
        "Annual report > Revenue\nQuarter | Revenue\nQ1 | 100\nQ2 | 120"
    );
    assert!(MD[chunks[2].span.clone().unwrap()].starts_with("| Quarter"));
    for (i, c) in chunks.iter().enumerate() {
        assert_eq!(c.ordinal, i);
        assert_eq!(c.tokens, count(&c.embedding_text()).unwrap());
    }
}

#[test]
fn big_tables_split_by_rows_with_the_header_repeated() {
    let mut csv = String::from("city,country,population,area\n");
    for i in 0..200 {
        csv += &format!("city{i},country{i},{},{}\n", 1000 + i, 50 + i);
    }
    let doc = parse_bytes(Path::new("cities.csv"), csv.as_bytes()).unwrap();
    let options = ChunkOptions {
        max_tokens: 64,
        overlap_tokens: 8,
    };
    let chunks = chunk_document(&doc, options, &count).unwrap();
    assert!(chunks.len() > 10, "{} chunks", chunks.len());
    let mut rows = 0;
    for c in &chunks {
        assert_eq!(c.kind, ElementKind::Table);
        assert!(c.tokens <= 64, "{} tokens: {}", c.tokens, c.text);
        let mut lines = c.text.lines();
        assert_eq!(lines.next(), Some("city | country | population | area"));
        rows += lines.count();
    }
    // Rows are not repeated between table parts.
    assert_eq!(rows, 200);
}

#[test]
fn long_prose_is_token_limited_with_sentence_overlap() {
    let mut text = String::from("# Notes\n\n");
    for i in 0..60 {
        text += &format!("Sentence number {i} talks about topic {i}. ");
    }
    let doc = parse_bytes(Path::new("notes.md"), text.as_bytes()).unwrap();
    let options = ChunkOptions {
        max_tokens: 40,
        overlap_tokens: 8,
    };
    let chunks = chunk_document(&doc, options, &count).unwrap();
    assert!(chunks.len() > 5);
    for pair in chunks.windows(2) {
        assert!(pair[0].tokens <= 40 && pair[1].tokens <= 40);
        // The next chunk starts with the last sentence of the previous one.
        let last = pair[0].text.lines().last().unwrap();
        assert!(
            pair[1].text.starts_with(last),
            "{:?} / {:?}",
            pair[0].text,
            pair[1].text
        );
    }
    // One sentence longer than a chunk is split by words.
    let long = format!("# T\n\n{}", "word ".repeat(500));
    let doc = parse_bytes(Path::new("long.md"), long.as_bytes()).unwrap();
    let chunks = chunk_document(&doc, options, &count).unwrap();
    assert!(chunks.iter().all(|c| c.tokens <= 40));
    let words: usize = chunks.iter().map(|c| common::words(&c.text).count()).sum();
    assert!(words >= 500);
}
