//! Plain text: paragraphs are separated by blank lines.

use crate::document::{Block, Element, normalize_space};

pub(super) fn parse(text: &str) -> (Option<String>, Vec<Element>) {
    let mut elements = Vec::new();
    let mut start: Option<usize> = None;
    let mut end = 0;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let blank = line.trim().is_empty();
        if blank {
            if let Some(s) = start.take() {
                push(&mut elements, text, s..end);
            }
        } else {
            if start.is_none() {
                start = Some(offset);
            }
            end = offset + line.trim_end().len();
        }
        offset += line.len();
    }
    if let Some(s) = start {
        push(&mut elements, text, s..end);
    }
    (None, elements)
}

fn push(elements: &mut Vec<Element>, text: &str, span: std::ops::Range<usize>) {
    let body = normalize_space(&text[span.clone()]);
    if body.is_empty() {
        return;
    }
    elements.push(Element {
        block: Block::Paragraph(body),
        section: Vec::new(),
        page: None,
        span: Some(span),
    });
}
