//! XML files. An XBRL instance (root `xbrli:xbrl`) becomes a table of its facts (see
//! [`super::xbrl`]); any other XML is read generically:
//!
//! - an element holding only text is a field: a paragraph `name: value` when the value is
//!   short, the value alone when it is prose;
//! - an element mixing text and markup (`<p>Some <b>bold</b> text</p>`) is a paragraph of its
//!   text;
//! - a run of two or more sibling elements of the same name whose children are all fields
//!   (records: `<book><title>…</title><year>…</year></book>`) is a table, one row per record,
//!   the header being the field names (attributes included);
//! - any other element is a section: its title (a child `title`, `name`, `heading`, …) is a
//!   heading, else its `name` / `title` / `id` attribute or its element name labels the
//!   section path. The root's title is the document title; the root itself is not in paths.
//!
//! Comments, processing instructions and the document type are skipped; entities are never
//! expanded (see [`super::xml_tree`]).

use std::path::Path;

use super::Parsed;
use super::xbrl;
use super::xml_tree::{self, XmlElement, XmlNode};
use crate::document::{Block, Element, Table, normalize_space};
use crate::error::Result;

/// Child elements whose text titles their parent.
const TITLE_NAMES: &[&str] = &["title", "name", "heading", "head", "caption", "label"];
/// Attributes that name an element in a section path, by preference.
const LABEL_ATTRS: &[&str] = &["name", "title", "id"];
/// A field value of fewer words than this is shown with its name.
const SHORT_WORDS: usize = 8;
/// Section paths keep the innermost labels, at most this many, each at most `MAX_LABEL` chars:
/// the chunker puts the path in every chunk.
const MAX_PATH: usize = 4;
const MAX_LABEL: usize = 80;

pub(super) fn parse(path: &Path, bytes: &[u8]) -> Result<Parsed> {
    let root = xml_tree::parse(path, "", bytes)?;
    if xbrl::is_instance(&root) {
        return Ok(xbrl::parse(&root));
    }
    let mut w = Walker::default();
    let title = title_child(&root).map(|(_, t)| t);
    if root.elements().next().is_none() || root.has_text() {
        w.element(&root);
    } else {
        w.container(&root, true);
    }
    Ok((title, w.elements).into())
}

#[derive(Debug, Default)]
struct Walker {
    elements: Vec<Element>,
    path: Vec<String>,
}

impl Walker {
    fn push(&mut self, block: Block) {
        let skip = self.path.len().saturating_sub(MAX_PATH);
        self.elements.push(Element {
            block,
            section: self.path[skip..].to_vec(),
            page: None,
            span: None,
        });
    }

    /// The content of `e` (its title child excepted).
    fn children(&mut self, e: &XmlElement) {
        let title = title_child(e).map(|(i, _)| i);
        let kids: Vec<(usize, &XmlElement)> = e
            .children
            .iter()
            .enumerate()
            .filter_map(|(i, c)| match c {
                XmlNode::Element(el) => Some((i, el)),
                XmlNode::Text(_) => None,
            })
            .collect();
        let mut k = 0;
        while k < kids.len() {
            let (i, c) = kids[k];
            if Some(i) == title {
                k += 1;
                continue;
            }
            // A run of same-named records is a table.
            let run = kids[k..]
                .iter()
                .take_while(|(_, s)| s.name == c.name && is_record(s))
                .count();
            if run >= 2 {
                let records: Vec<&XmlElement> = kids[k..k + run].iter().map(|(_, s)| *s).collect();
                self.push(Block::Table(table_of(&records)));
                k += run;
                continue;
            }
            self.element(c);
            k += 1;
        }
    }

    fn element(&mut self, e: &XmlElement) {
        if e.elements().next().is_none() {
            let text = normalize_space(&e.text());
            if text.is_empty() {
                return;
            }
            let attrs = attr_note(e);
            if text.split_whitespace().count() < SHORT_WORDS {
                self.push(Block::Paragraph(format!("{}: {text}{attrs}", e.local)));
            } else {
                self.push(Block::Paragraph(format!("{text}{attrs}")));
            }
        } else if e.has_text() {
            let text = normalize_space(&e.text());
            if !text.is_empty() {
                self.push(Block::Paragraph(text));
            }
        } else {
            self.container(e, false);
        }
    }

    /// A section: heading from its title child, label in the path, then its content.
    fn container(&mut self, e: &XmlElement, root: bool) {
        if root {
            self.children(e);
            return;
        }
        let label = match title_child(e) {
            Some((_, title)) => {
                let level = (self.path.len() + 1).min(6) as u8;
                self.push(Block::Heading {
                    level,
                    text: title.clone(),
                });
                title
            }
            None => LABEL_ATTRS
                .iter()
                .find_map(|a| e.attr(None, a))
                .map(normalize_space)
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| e.local.clone()),
        };
        self.path.push(truncate(label));
        self.children(e);
        self.path.pop();
    }
}

/// The index (among `e.children`) and text of `e`'s title child: a field named like a title,
/// when `e` has other content besides it.
fn title_child(e: &XmlElement) -> Option<(usize, String)> {
    if e.elements().count() < 2 {
        return None;
    }
    e.children.iter().enumerate().find_map(|(i, c)| match c {
        XmlNode::Element(t)
            if TITLE_NAMES.contains(&t.local.to_ascii_lowercase().as_str())
                && t.elements().next().is_none() =>
        {
            let text = normalize_space(&t.text());
            (!text.is_empty()).then_some((i, text))
        }
        _ => None,
    })
}

/// Whether `e` is a record: only field children (text, no markup) and no loose text.
fn is_record(e: &XmlElement) -> bool {
    e.elements().next().is_some()
        && !e.has_text()
        && e.elements().all(|c| c.elements().next().is_none())
}

/// Records as a table: attributes, then child fields, in order of first appearance; a field
/// repeated within a record joins its values with `; `.
fn table_of(records: &[&XmlElement]) -> Table {
    let mut header: Vec<String> = Vec::new();
    let mut rows: Vec<Vec<(String, String)>> = Vec::new();
    for r in records {
        let mut fields: Vec<(String, String)> = Vec::new();
        let attrs = r
            .attrs
            .iter()
            .filter(|a| a.ns.is_none())
            .map(|a| (a.local.clone(), normalize_space(&a.value)));
        let kids = r
            .elements()
            .map(|c| (c.local.clone(), normalize_space(&c.text())));
        for (name, value) in attrs.chain(kids) {
            if !header.contains(&name) {
                header.push(name.clone());
            }
            match fields.iter_mut().find(|(n, _)| *n == name) {
                Some((_, v)) if !value.is_empty() => {
                    if !v.is_empty() {
                        v.push_str("; ");
                    }
                    v.push_str(&value);
                }
                Some(_) => {}
                None => fields.push((name, value)),
            }
        }
        rows.push(fields);
    }
    let rows = rows
        .into_iter()
        .map(|fields| {
            let mut row: Vec<String> = header
                .iter()
                .map(|h| {
                    fields
                        .iter()
                        .find(|(n, _)| n == h)
                        .map(|(_, v)| v.clone())
                        .unwrap_or_default()
                })
                .collect();
            while row.last().is_some_and(String::is_empty) {
                row.pop();
            }
            row
        })
        .collect();
    Table { header, rows }
}

/// ` (unit USD, scale 3)` for a field's own attributes (namespaced ones left out).
fn attr_note(e: &XmlElement) -> String {
    let parts: Vec<String> = e
        .attrs
        .iter()
        .filter(|a| a.ns.is_none() && !a.value.trim().is_empty())
        .map(|a| format!("{} {}", a.local, normalize_space(&a.value)))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join(", "))
    }
}

fn truncate(label: String) -> String {
    if label.chars().count() <= MAX_LABEL {
        return label;
    }
    let mut out: String = label.chars().take(MAX_LABEL - 1).collect();
    out.push('…');
    out
}
