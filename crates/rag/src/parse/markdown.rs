//! Markdown (CommonMark with tables) through pulldown-cmark's event stream, with the byte span of
//! each element in the source.

use pulldown_cmark::{Event, HeadingLevel, Options, Parser, Tag, TagEnd};

use super::Parsed;
use crate::document::{Block, Element, SectionPath, Table, normalize_space};

/// Builds elements from the event stream.
#[derive(Default)]
struct Builder {
    elements: Vec<Element>,
    sections: SectionPath,
    title: Option<String>,
    /// Text of the element being read.
    buf: String,
    start: usize,
    heading: Option<u8>,
    in_code: bool,
    /// Open list items (nested lists make it deeper).
    item_depth: usize,
    table: Option<Table>,
    row: Vec<String>,
    cell: Option<String>,
    /// The YAML front matter (`---` … `---` at the top), when inside it or after it.
    front_matter: Option<String>,
    in_front_matter: bool,
}

impl Builder {
    fn push(&mut self, block: Block, span: std::ops::Range<usize>) {
        self.elements.push(Element {
            block,
            section: self.sections.current(),
            page: None,
            span: Some(span),
        });
    }

    fn text(&mut self, t: &str) {
        match &mut self.cell {
            Some(cell) => cell.push_str(t),
            None => self.buf.push_str(t),
        }
    }

    /// Emits the pending list-item text (before a nested list, or at the item's end).
    fn flush_item(&mut self, end: usize) {
        let text = normalize_space(&self.buf);
        self.buf.clear();
        if !text.is_empty() {
            self.push(Block::ListItem(text), self.start..end);
        }
    }
}

/// The value of `key: value` in YAML front matter (top-level keys only, quotes removed).
fn front_matter_value<'a>(yaml: &'a str, key: &str) -> Option<&'a str> {
    yaml.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        let v = v.trim().trim_matches(|c| c == '"' || c == '\'');
        (k == key && !v.is_empty()).then_some(v)
    })
}

pub(super) fn parse(text: &str) -> Parsed {
    let mut b = Builder::default();
    let options = Options::ENABLE_TABLES
        | Options::ENABLE_STRIKETHROUGH
        | Options::ENABLE_YAML_STYLE_METADATA_BLOCKS;
    for (event, range) in Parser::new_ext(text, options).into_offset_iter() {
        if b.in_front_matter {
            match event {
                Event::Text(t) => b.front_matter.get_or_insert_default().push_str(&t),
                Event::End(TagEnd::MetadataBlock(_)) => b.in_front_matter = false,
                _ => {}
            }
            continue;
        }
        match event {
            Event::Start(Tag::MetadataBlock(_)) => b.in_front_matter = true,
            Event::Start(Tag::Heading { level, .. }) => {
                b.heading = Some(heading_level(level));
                b.buf.clear();
                b.start = range.start;
            }
            Event::End(TagEnd::Heading(_)) => {
                let level = b.heading.take().unwrap_or(1);
                let heading = normalize_space(&b.buf);
                b.buf.clear();
                if heading.is_empty() {
                    continue;
                }
                if level == 1 && b.title.is_none() {
                    b.title = Some(heading.clone());
                }
                b.push(
                    Block::Heading {
                        level,
                        text: heading.clone(),
                    },
                    b.start..range.end,
                );
                b.sections.enter(level, &heading);
            }
            Event::Start(Tag::Paragraph) if b.item_depth == 0 => {
                b.buf.clear();
                b.start = range.start;
            }
            Event::End(TagEnd::Paragraph) => {
                if b.item_depth == 0 {
                    let para = normalize_space(&b.buf);
                    b.buf.clear();
                    if !para.is_empty() {
                        b.push(Block::Paragraph(para), b.start..range.end);
                    }
                } else {
                    b.buf.push(' ');
                }
            }
            Event::Start(Tag::Item) => {
                if b.item_depth > 0 {
                    b.flush_item(range.start);
                }
                b.item_depth += 1;
                b.buf.clear();
                b.start = range.start;
            }
            Event::End(TagEnd::Item) => {
                b.flush_item(range.end);
                b.item_depth = b.item_depth.saturating_sub(1);
                b.start = range.end;
            }
            Event::Start(Tag::CodeBlock(_)) => {
                b.in_code = true;
                b.buf.clear();
                b.start = range.start;
            }
            Event::End(TagEnd::CodeBlock) => {
                b.in_code = false;
                let code = b.buf.trim_end().to_string();
                b.buf.clear();
                if !code.trim().is_empty() {
                    b.push(Block::Code(code), b.start..range.end);
                }
            }
            Event::Start(Tag::Table(_)) => {
                b.table = Some(Table::default());
                b.start = range.start;
            }
            Event::End(TagEnd::TableHead) => {
                if let Some(t) = &mut b.table {
                    t.header = std::mem::take(&mut b.row);
                }
            }
            Event::Start(Tag::TableRow) => b.row.clear(),
            Event::End(TagEnd::TableRow) => {
                if let Some(t) = &mut b.table {
                    t.rows.push(std::mem::take(&mut b.row));
                }
            }
            Event::Start(Tag::TableCell) => b.cell = Some(String::new()),
            Event::End(TagEnd::TableCell) => {
                let cell = b.cell.take().unwrap_or_default();
                b.row.push(normalize_space(&cell));
            }
            Event::End(TagEnd::Table) => {
                if let Some(t) = b.table.take() {
                    b.push(Block::Table(t), b.start..range.end);
                }
            }
            Event::Text(t) | Event::Code(t) => b.text(&t),
            Event::SoftBreak | Event::HardBreak => b.text(if b.in_code { "\n" } else { " " }),
            _ => {}
        }
    }
    let yaml = b.front_matter.unwrap_or_default();
    let meta_title = front_matter_value(&yaml, "title").map(normalize_space);
    Parsed {
        title: meta_title.or(b.title),
        date: front_matter_value(&yaml, "date").and_then(crate::date::parse),
        elements: b.elements,
    }
}

fn heading_level(level: HeadingLevel) -> u8 {
    match level {
        HeadingLevel::H1 => 1,
        HeadingLevel::H2 => 2,
        HeadingLevel::H3 => 3,
        HeadingLevel::H4 => 4,
        HeadingLevel::H5 => 5,
        HeadingLevel::H6 => 6,
    }
}
