//! Word documents (DOCX, Office Open XML): the zip package's main part is read with quick-xml.
//! Paragraph styles give the structure: `Heading 1`…`Heading 9` (or an outline level) are
//! headings, `Title` is the document's title, numbered or bulleted paragraphs are list items,
//! tables keep their first row as the header. Line breaks and tabs separate words; images,
//! drawings (and the text boxes in them), field codes, deleted text, headers, footers,
//! footnotes and comments are left out.
//!
//! Pages: Word records where its last layout broke pages (`w:lastRenderedPageBreak`); when the
//! file has those, elements carry that page. Files written without a layout (python-docx,
//! converters) only know their hard page breaks, which then number the pages; a file with
//! neither has no pages.

use std::collections::HashMap;
use std::path::Path;

use super::Parsed;
use super::package::{Package, error};
use super::xml_tree::{self, XmlElement, XmlNode};
use crate::document::{Block, Element, SectionPath, Table, normalize_space};
use crate::error::Result;

const W: &str = "http://schemas.openxmlformats.org/wordprocessingml/2006/main";
const W_STRICT: &str = "http://purl.oclc.org/ooxml/wordprocessingml/main";
const MC: &str = "http://schemas.openxmlformats.org/markup-compatibility/2006";
const DC: &str = "http://purl.org/dc/elements/1.1/";
const DCTERMS: &str = "http://purl.org/dc/terms/";
const RELS: &str = "http://schemas.openxmlformats.org/package/2006/relationships";

/// Elements whose content is not document text.
const SKIPPED: &[&str] = &[
    "delText",
    "instrText",
    "drawing",
    "pict",
    "object",
    "del",
    "moveFrom",
    "footnoteReference",
    "endnoteReference",
    "commentReference",
    "pPr",
    "rPr",
    "sectPr",
    "tblPr",
    "trPr",
    "tcPr",
    "tblGrid",
];

/// Whether `e` is the WordprocessingML element `local` (transitional or strict namespace).
fn w(e: &XmlElement, local: &str) -> bool {
    e.local == local && matches!(e.ns.as_deref(), Some(W | W_STRICT))
}

/// A WordprocessingML attribute (`w:val`, …) of `e`.
fn w_attr<'a>(e: &'a XmlElement, local: &str) -> Option<&'a str> {
    e.attr(Some(W), local)
        .or_else(|| e.attr(Some(W_STRICT), local))
}

fn w_child<'a>(e: &'a XmlElement, local: &str) -> Option<&'a XmlElement> {
    e.elements().find(|c| w(c, local))
}

pub(super) fn parse(path: &Path, bytes: &[u8]) -> Result<Parsed> {
    let mut package = Package::open(path, bytes, "DOCX")?;
    let main = main_part(path, &mut package)?;
    let Some(xml) = package.read(&main)? else {
        return Err(error(
            path,
            format!("no {main} in the package: not a Word document (is it another Office file?)"),
        ));
    };
    let root = xml_tree::parse(path, &main, &xml)?;
    if !w(&root, "document") {
        return Err(error(
            path,
            format!(
                "not a Word document: its main part {main} is a <{}> (another Office file \
                 under a .docx name?)",
                root.name
            ),
        ));
    }
    let Some(body) = w_child(&root, "body") else {
        return Err(error(path, format!("{main}: no w:body element")));
    };
    let dir = main.rsplit_once('/').map_or("", |(d, _)| d);
    let styles_name = if dir.is_empty() {
        "styles.xml".to_string()
    } else {
        format!("{dir}/styles.xml")
    };
    let styles = match package.read(&styles_name)? {
        Some(xml) => styles(&xml_tree::parse(path, &styles_name, &xml)?),
        None => HashMap::new(),
    };
    let core = match package.read("docProps/core.xml")? {
        Some(xml) => Some(xml_tree::parse(path, "docProps/core.xml", &xml)?),
        None => None,
    };
    let core_text = |ns, name| {
        core.as_ref()?
            .elements()
            .find(|e| e.is(ns, name))
            .map(|e| normalize_space(&e.text()))
            .filter(|t| !t.is_empty())
    };
    let core_title = core_text(DC, "title");
    let date = core_text(DCTERMS, "created")
        .or_else(|| core_text(DCTERMS, "modified"))
        .and_then(|d| crate::date::parse(&d));
    let mut b = Builder {
        styles,
        pages: Pages::of(body),
        page: 1,
        ..Builder::default()
    };
    b.blocks(body);
    Ok(Parsed {
        title: b.title.or(core_title).or(b.first_h1),
        date,
        elements: b.elements,
    })
}

/// The package's main document part, from its relationships (`word/document.xml` in every
/// producer seen, but the package names it).
fn main_part(path: &Path, package: &mut Package<'_>) -> Result<String> {
    let fallback = "word/document.xml".to_string();
    let Some(xml) = package.read("_rels/.rels")? else {
        return Ok(fallback);
    };
    let rels = xml_tree::parse(path, "_rels/.rels", &xml)?;
    let target = rels
        .elements()
        .filter(|r| r.is(RELS, "Relationship"))
        .find(|r| {
            r.attr(None, "Type")
                .is_some_and(|t| t.ends_with("/officeDocument"))
        })
        .and_then(|r| r.attr(None, "Target"))
        .map(|t| t.trim_start_matches('/').to_string());
    Ok(target.unwrap_or(fallback))
}

/// What a paragraph style makes of a paragraph.
#[derive(Debug, Default, Clone)]
struct Style {
    heading: Option<u8>,
    title: bool,
    list: bool,
    based_on: Option<String>,
}

/// Paragraph styles by id, with heading levels and list numbering inherited through
/// `w:basedOn`.
fn styles(root: &XmlElement) -> HashMap<String, Style> {
    let mut out = HashMap::new();
    for s in root.elements().filter(|e| w(e, "style")) {
        if w_attr(s, "type").is_some_and(|t| t != "paragraph") {
            continue;
        }
        let Some(id) = w_attr(s, "styleId") else {
            continue;
        };
        let name = w_child(s, "name")
            .and_then(|n| w_attr(n, "val"))
            .unwrap_or(id)
            .to_ascii_lowercase();
        let ppr = w_child(s, "pPr");
        let outline = ppr.and_then(outline_level);
        let heading = name
            .strip_prefix("heading ")
            .and_then(|n| n.trim().parse::<u8>().ok())
            .filter(|n| (1..=9).contains(n))
            .or(outline);
        let numbered = ppr
            .and_then(|p| w_child(p, "numPr"))
            .is_some_and(numbering_on);
        out.insert(
            id.to_string(),
            Style {
                heading,
                title: name == "title",
                list: numbered
                    || name.starts_with("list bullet")
                    || name.starts_with("list number"),
                based_on: w_child(s, "basedOn")
                    .and_then(|b| w_attr(b, "val"))
                    .map(str::to_string),
            },
        );
    }
    // Inherit through basedOn (chains are short; a cycle stops after a few steps).
    let ids: Vec<String> = out.keys().cloned().collect();
    for id in ids {
        let mut current = out.get(&id).cloned().unwrap_or_default();
        let mut parent = current.based_on.clone();
        for _ in 0..16 {
            let Some(p) = parent.as_ref().and_then(|p| out.get(p)) else {
                break;
            };
            current.heading = current.heading.or(p.heading);
            current.list |= p.list;
            parent = p.based_on.clone();
        }
        out.insert(id, current);
    }
    out
}

/// A paragraph's outline level as a heading level 1–9 (`w:outlineLvl` 0–8; 9 is body text).
fn outline_level(ppr: &XmlElement) -> Option<u8> {
    w_child(ppr, "outlineLvl")
        .and_then(|o| w_attr(o, "val"))
        .and_then(|v| v.parse::<u8>().ok())
        .filter(|v| *v < 9)
        .map(|v| v + 1)
}

/// Whether a `w:numPr` turns numbering on (`w:numId` 0 removes it).
fn numbering_on(num_pr: &XmlElement) -> bool {
    w_child(num_pr, "numId")
        .and_then(|n| w_attr(n, "val"))
        .is_none_or(|v| v != "0")
}

/// Which marks number the pages.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
enum Pages {
    /// No page information.
    #[default]
    Unknown,
    /// Word's last layout (`w:lastRenderedPageBreak`).
    Rendered,
    /// Hard page breaks only.
    Hard,
}

impl Pages {
    fn of(body: &XmlElement) -> Pages {
        fn scan(e: &XmlElement, rendered: &mut bool, hard: &mut bool) {
            for c in e.elements() {
                if w(c, "lastRenderedPageBreak") {
                    *rendered = true;
                } else if (w(c, "br") && w_attr(c, "type") == Some("page"))
                    || (w(c, "pageBreakBefore") && w_attr(c, "val").is_none_or(is_on))
                {
                    *hard = true;
                }
                scan(c, rendered, hard);
            }
        }
        let (mut rendered, mut hard) = (false, false);
        scan(body, &mut rendered, &mut hard);
        if rendered {
            Pages::Rendered
        } else if hard {
            Pages::Hard
        } else {
            Pages::Unknown
        }
    }
}

fn is_on(v: &str) -> bool {
    !matches!(v, "0" | "false" | "off")
}

#[derive(Debug, Default)]
struct Builder {
    styles: HashMap<String, Style>,
    pages: Pages,
    page: u32,
    elements: Vec<Element>,
    sections: SectionPath,
    title: Option<String>,
    first_h1: Option<String>,
}

/// A paragraph's text and the page its text starts on.
#[derive(Debug, Default)]
struct Run {
    text: String,
    first_page: Option<u32>,
}

impl Builder {
    fn page(&self) -> Option<u32> {
        (self.pages != Pages::Unknown).then_some(self.page)
    }

    fn push(&mut self, block: Block, page: Option<u32>) {
        self.elements.push(Element {
            block,
            section: self.sections.current(),
            page,
            span: None,
        });
    }

    /// Block-level content: paragraphs, tables, and the containers around them.
    fn blocks(&mut self, parent: &XmlElement) {
        for e in parent.elements() {
            if w(e, "p") {
                self.paragraph(e);
            } else if w(e, "tbl") {
                self.table(e);
            } else if e.local == "Fallback" && e.ns.as_deref() == Some(MC) {
                // The same content as mc:Choice, for older readers.
            } else if !(matches!(e.ns.as_deref(), Some(W | W_STRICT))
                && SKIPPED.contains(&e.local.as_str()))
            {
                // w:sdt / w:sdtContent, w:customXml, mc:AlternateContent, …
                self.blocks(e);
            }
        }
    }

    fn paragraph(&mut self, p: &XmlElement) {
        let ppr = w_child(p, "pPr");
        if self.pages == Pages::Hard
            && !self.elements.is_empty()
            && ppr
                .and_then(|pr| w_child(pr, "pageBreakBefore"))
                .is_some_and(|b| w_attr(b, "val").is_none_or(is_on))
        {
            self.page += 1;
        }
        let style = ppr
            .and_then(|pr| w_child(pr, "pStyle"))
            .and_then(|s| w_attr(s, "val"))
            .map(|id| {
                self.styles.get(id).cloned().unwrap_or_else(|| Style {
                    // No styles part: Word's built-in style ids.
                    heading: id
                        .strip_prefix("Heading")
                        .and_then(|n| n.parse::<u8>().ok())
                        .filter(|n| (1..=9).contains(n)),
                    title: id == "Title",
                    ..Style::default()
                })
            })
            .unwrap_or_default();
        let mut run = Run::default();
        self.inline(p, &mut run);
        let text = normalize_space(&run.text);
        let page = run.first_page.or(self.page());
        if text.is_empty() {
            return;
        }
        let heading = ppr.and_then(outline_level).or(style.heading);
        let numbered = ppr.and_then(|pr| w_child(pr, "numPr")).map(numbering_on);
        if style.title && heading.is_none() {
            if self.title.is_none() {
                self.title = Some(text);
            } else {
                self.push(Block::Paragraph(text), page);
            }
        } else if let Some(level) = heading {
            let level = level.min(6);
            if level == 1 && self.first_h1.is_none() {
                self.first_h1 = Some(text.clone());
            }
            self.push(
                Block::Heading {
                    level,
                    text: text.clone(),
                },
                page,
            );
            self.sections.enter(level, &text);
        } else if numbered.unwrap_or(style.list) {
            self.push(Block::ListItem(text), page);
        } else {
            self.push(Block::Paragraph(text), page);
        }
    }

    /// Text of runs under `e`, with breaks and tabs as spaces; counts page breaks.
    fn inline(&mut self, e: &XmlElement, run: &mut Run) {
        for child in &e.children {
            let XmlNode::Element(c) = child else {
                continue;
            };
            let in_w = matches!(c.ns.as_deref(), Some(W | W_STRICT));
            if c.local == "Fallback" && c.ns.as_deref() == Some(MC) {
                continue;
            }
            if !in_w {
                self.inline(c, run);
                continue;
            }
            match c.local.as_str() {
                "t" => {
                    let t = c.text();
                    if run.first_page.is_none() && !t.trim().is_empty() {
                        run.first_page = self.page();
                    }
                    run.text.push_str(&t);
                }
                "tab" | "cr" | "ptab" => run.text.push(' '),
                "noBreakHyphen" => run.text.push('-'),
                "br" => {
                    if w_attr(c, "type") == Some("page") && self.pages == Pages::Hard {
                        self.page += 1;
                    }
                    run.text.push(' ');
                }
                "lastRenderedPageBreak" => {
                    if self.pages == Pages::Rendered {
                        self.page += 1;
                    }
                }
                name if SKIPPED.contains(&name) => {}
                // Runs, hyperlinks, simple fields, insertions, smart tags, content controls.
                _ => self.inline(c, run),
            }
        }
    }

    fn table(&mut self, tbl: &XmlElement) {
        let trs = descendants_named(tbl, "tr");
        if let [tr] = trs.as_slice()
            && let [cell] = descendants_named(tr, "tc").as_slice()
        {
            // A one-cell table is a frame around content: read the content as blocks.
            self.blocks(cell);
            return;
        }
        let mut rows: Vec<Vec<String>> = Vec::new();
        let mut page = None;
        for tr in trs {
            let mut row: Vec<String> = Vec::new();
            for tc in descendants_named(tr, "tc") {
                let mut run = Run::default();
                self.inline_cell(tc, &mut run);
                page = page.or(run.first_page);
                let props = w_child(tc, "tcPr");
                let span = props
                    .and_then(|p| w_child(p, "gridSpan"))
                    .and_then(|g| w_attr(g, "val"))
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or(1)
                    .clamp(1, 64);
                let continued = props
                    .and_then(|p| w_child(p, "vMerge"))
                    .is_some_and(|m| w_attr(m, "val").is_none_or(|v| v == "continue"));
                let col = row.len();
                let text = if continued {
                    // A vertically merged cell repeats the value above it.
                    rows.last()
                        .and_then(|r| r.get(col))
                        .cloned()
                        .unwrap_or_default()
                } else {
                    normalize_space(&run.text)
                };
                row.push(text);
                row.extend(std::iter::repeat_n(String::new(), span - 1));
            }
            if row.iter().any(|c| !c.is_empty()) {
                rows.push(row);
            }
        }
        let mut rows = rows.into_iter();
        let Some(mut header) = rows.next() else {
            return;
        };
        let rows: Vec<Vec<String>> = rows.collect();
        let width = rows.iter().map(Vec::len).max().unwrap_or(0);
        if header.len() < width {
            header.resize(width, String::new());
        }
        let page = page.or(self.page());
        self.push(Block::Table(Table { header, rows }), page);
    }

    /// A table cell's text: its paragraphs (and nested tables) joined by spaces.
    fn inline_cell(&mut self, tc: &XmlElement, run: &mut Run) {
        for e in tc.elements() {
            if w(e, "tcPr") {
                continue;
            }
            if w(e, "p") {
                self.inline(e, run);
                run.text.push(' ');
            } else {
                self.inline_cell(e, run);
            }
        }
    }
}

/// Elements `local` under `e`, not looking inside them nor inside nested tables (rows and cells
/// may sit in content controls or custom XML).
fn descendants_named<'a>(e: &'a XmlElement, local: &str) -> Vec<&'a XmlElement> {
    let mut out = Vec::new();
    for c in e.elements() {
        if w(c, local) {
            out.push(c);
        } else if !w(c, "tbl") && !w(c, "p") && !w(c, "tcPr") && !w(c, "trPr") {
            out.extend(descendants_named(c, local));
        }
    }
    out
}
