//! HTML through scraper (html5ever): headings, paragraphs, list items, tables and `<pre>` are
//! kept; navigation, scripts, styles and other non-content elements are dropped. Loose text in
//! container elements becomes paragraphs. html5ever reports no source positions, so HTML
//! elements carry no span.

use ego_tree::NodeRef;
use scraper::{ElementRef, Html, Node};

use super::Parsed;
use crate::document::{Block, Element, SectionPath, Table, normalize_space};

/// Elements whose content is never document text.
const DROPPED: &[&str] = &[
    "script", "style", "nav", "noscript", "template", "head", "svg", "iframe", "button", "select",
    "object", "canvas", "form",
];

/// Elements that end the current paragraph of loose text.
const CONTAINERS: &[&str] = &[
    "html",
    "body",
    "div",
    "section",
    "article",
    "main",
    "header",
    "footer",
    "aside",
    "blockquote",
    "ul",
    "ol",
    "dl",
    "dt",
    "dd",
    "figure",
    "figcaption",
    "details",
    "summary",
    "center",
    "hr",
    "address",
    "fieldset",
];

#[derive(Default)]
struct Walker {
    elements: Vec<Element>,
    sections: SectionPath,
    first_h1: Option<String>,
    /// Loose text waiting for a block boundary.
    inline: String,
}

impl Walker {
    fn push(&mut self, block: Block) {
        self.elements.push(Element {
            block,
            section: self.sections.current(),
            page: None,
            span: None,
        });
    }

    fn flush(&mut self) {
        let text = normalize_space(&self.inline);
        self.inline.clear();
        if !text.is_empty() {
            self.push(Block::Paragraph(text));
        }
    }

    fn walk(&mut self, node: NodeRef<'_, Node>) {
        for child in node.children() {
            match child.value() {
                Node::Text(t) => self.inline.push_str(t),
                Node::Element(e) => self.element(child, e.name()),
                _ => {}
            }
        }
    }

    fn element(&mut self, node: NodeRef<'_, Node>, name: &str) {
        if DROPPED.contains(&name) {
            return;
        }
        if let Some(level) = heading_level(name) {
            self.flush();
            let text = normalize_space(&text_of(node, false));
            if text.is_empty() {
                return;
            }
            if level == 1 && self.first_h1.is_none() {
                self.first_h1 = Some(text.clone());
            }
            self.push(Block::Heading {
                level,
                text: text.clone(),
            });
            self.sections.enter(level, &text);
            return;
        }
        match name {
            "p" => {
                self.flush();
                self.inline = text_of(node, false);
                self.flush();
            }
            "li" => {
                self.flush();
                let text = normalize_space(&text_of(node, true));
                if !text.is_empty() {
                    self.push(Block::ListItem(text));
                }
                // Nested lists and tables become their own elements.
                for child in node.children() {
                    if let Some(e) = ElementRef::wrap(child)
                        && matches!(e.value().name(), "ul" | "ol" | "table")
                    {
                        self.element(child, e.value().name());
                    }
                }
            }
            "pre" => {
                self.flush();
                let code = text_of(node, false).trim_end().to_string();
                if !code.trim().is_empty() {
                    self.push(Block::Code(code));
                }
            }
            "table" => {
                self.flush();
                let table = table_of(node);
                if !table.header.is_empty() || !table.rows.is_empty() {
                    self.push(Block::Table(table));
                }
            }
            "br" => self.inline.push(' '),
            _ if CONTAINERS.contains(&name) => {
                self.flush();
                self.walk(node);
                self.flush();
            }
            _ => self.walk(node),
        }
    }
}

/// `<meta>` tags that date a page (by `name`, `property` or `itemprop`), in order of preference:
/// publication before modification.
const DATE_META: [&str; 9] = [
    "date",
    "dcterms.created",
    "dcterms.date",
    "dc.date",
    "dc.date.created",
    "article:published_time",
    "datepublished",
    "dcterms.modified",
    "article:modified_time",
];

pub(super) fn parse(text: &str) -> Parsed {
    let html = Html::parse_document(text);
    let elements = || {
        html.root_element()
            .descendants()
            .filter_map(ElementRef::wrap)
    };
    let title = elements()
        .find(|e| e.value().name() == "title")
        .map(|e| normalize_space(&e.text().collect::<String>()));
    let mut dates: Vec<(usize, i64)> = elements()
        .filter(|e| e.value().name() == "meta")
        .filter_map(|e| {
            let v = e.value();
            let key = v
                .attr("name")
                .or(v.attr("property"))
                .or(v.attr("itemprop"))?;
            let rank = DATE_META
                .iter()
                .position(|m| m.eq_ignore_ascii_case(key.trim()))?;
            Some((rank, crate::date::parse(v.attr("content")?)?))
        })
        .collect();
    dates.sort_by_key(|d| d.0);
    let mut w = Walker::default();
    w.walk(html.tree.root());
    w.flush();
    Parsed {
        title: title.filter(|t| !t.is_empty()).or(w.first_h1),
        date: dates.first().map(|d| d.1),
        elements: w.elements,
    }
}

fn heading_level(name: &str) -> Option<u8> {
    match name {
        "h1" => Some(1),
        "h2" => Some(2),
        "h3" => Some(3),
        "h4" => Some(4),
        "h5" => Some(5),
        "h6" => Some(6),
        _ => None,
    }
}

/// The text under `node`, without dropped elements; `skip_blocks` also leaves out nested lists
/// and tables (a list item's own text).
fn text_of(node: NodeRef<'_, Node>, skip_blocks: bool) -> String {
    let mut out = String::new();
    collect_text(node, skip_blocks, &mut out);
    out
}

fn collect_text(node: NodeRef<'_, Node>, skip_blocks: bool, out: &mut String) {
    for child in node.children() {
        match child.value() {
            Node::Text(t) => out.push_str(t),
            Node::Element(e) => {
                let name = e.name();
                if DROPPED.contains(&name) || (skip_blocks && matches!(name, "ul" | "ol" | "table"))
                {
                    continue;
                }
                if name == "br" || CONTAINERS.contains(&name) || name == "p" {
                    out.push(' ');
                }
                collect_text(child, skip_blocks, out);
            }
            _ => {}
        }
    }
}

/// Rows of `table` (not of tables nested in it); the header is the `<thead>` row or a first
/// row made of `<th>` cells.
fn table_of(table: NodeRef<'_, Node>) -> Table {
    let mut rows: Vec<(bool, Vec<String>)> = Vec::new();
    collect_rows(table, false, &mut rows);
    let mut out = Table::default();
    let mut iter = rows.into_iter().peekable();
    if let Some((is_header, _)) = iter.peek()
        && *is_header
        && let Some((_, header)) = iter.next()
    {
        out.header = header;
    }
    out.rows = iter.map(|(_, r)| r).collect();
    out
}

fn collect_rows(node: NodeRef<'_, Node>, in_head: bool, rows: &mut Vec<(bool, Vec<String>)>) {
    for child in node.children() {
        let Some(e) = ElementRef::wrap(child) else {
            continue;
        };
        match e.value().name() {
            "thead" => collect_rows(child, true, rows),
            "tbody" | "tfoot" => collect_rows(child, false, rows),
            "tr" => {
                let mut all_th = true;
                let mut cells = Vec::new();
                for cell in child.children().filter_map(ElementRef::wrap) {
                    let name = cell.value().name();
                    if name != "td" && name != "th" {
                        continue;
                    }
                    all_th &= name == "th";
                    cells.push(normalize_space(&text_of(*cell, false)));
                }
                if !cells.is_empty() {
                    rows.push((in_head || (all_th && rows.is_empty()), cells));
                }
            }
            _ => {}
        }
    }
}
