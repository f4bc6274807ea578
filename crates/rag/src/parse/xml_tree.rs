//! XML bytes → a small element tree with namespaces resolved, shared by the DOCX, generic XML
//! and XBRL readers. quick-xml expands no entities but the five predefined ones and character
//! references: a document type's entities (internal or external) are never expanded, so an
//! entity bomb or an external entity cannot make the reader grow or reach out; an unknown
//! entity reference stays in the text as written (`&name;`).

use std::borrow::Cow;
use std::path::Path;

use quick_xml::NsReader;
use quick_xml::XmlVersion;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;

use crate::error::{RagError, Result};

/// Deepest element nesting accepted (the readers walk the tree recursively).
pub(super) const MAX_DEPTH: usize = 256;

/// An element with its namespace URI resolved.
#[derive(Debug, Clone, Default)]
pub(super) struct XmlElement {
    /// Namespace URI, when the name is bound to one.
    pub ns: Option<String>,
    /// The name without its prefix.
    pub local: String,
    /// The name as written (`prefix:local`).
    pub name: String,
    pub attrs: Vec<XmlAttr>,
    pub children: Vec<XmlNode>,
}

#[derive(Debug, Clone)]
pub(super) struct XmlAttr {
    pub ns: Option<String>,
    pub local: String,
    pub value: String,
}

#[derive(Debug, Clone)]
pub(super) enum XmlNode {
    Element(XmlElement),
    Text(String),
}

impl XmlElement {
    /// Child elements, in order.
    pub fn elements(&self) -> impl Iterator<Item = &XmlElement> {
        self.children.iter().filter_map(|c| match c {
            XmlNode::Element(e) => Some(e),
            XmlNode::Text(_) => None,
        })
    }

    /// The first child element in namespace `ns` named `local`.
    pub fn child(&self, ns: &str, local: &str) -> Option<&XmlElement> {
        self.elements().find(|e| e.is(ns, local))
    }

    pub fn is(&self, ns: &str, local: &str) -> bool {
        self.local == local && self.ns.as_deref() == Some(ns)
    }

    /// The value of the attribute named `local` (in no namespace, or in `ns` when given).
    pub fn attr(&self, ns: Option<&str>, local: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|a| a.local == local && a.ns.as_deref() == ns)
            .map(|a| a.value.as_str())
    }

    /// All text under the element, in document order, as written (no spaces added).
    pub fn text(&self) -> String {
        let mut out = String::new();
        self.collect_text(&mut out);
        out
    }

    fn collect_text(&self, out: &mut String) {
        for child in &self.children {
            match child {
                XmlNode::Text(t) => out.push_str(t),
                XmlNode::Element(e) => e.collect_text(out),
            }
        }
    }

    /// Whether any direct child is non-blank text (mixed or text content).
    pub fn has_text(&self) -> bool {
        self.children
            .iter()
            .any(|c| matches!(c, XmlNode::Text(t) if !t.trim().is_empty()))
    }
}

/// Decodes `bytes` (UTF-8, or the encoding a byte-order mark or the XML declaration names) and
/// parses them into the root element. `what` names the XML inside a package in errors
/// (`word/document.xml`), or is empty for a plain XML file.
pub(super) fn parse(path: &Path, what: &str, bytes: &[u8]) -> Result<XmlElement> {
    let text = decode(path, what, bytes)?;
    build(path, what, &text)
}

fn err(path: &Path, what: &str, line: Option<u64>, msg: String) -> RagError {
    let msg = if what.is_empty() {
        msg
    } else {
        format!("{what}: {msg}")
    };
    RagError::Parse {
        path: path.to_path_buf(),
        line,
        what: msg,
    }
}

fn decode<'a>(path: &Path, what: &str, bytes: &'a [u8]) -> Result<Cow<'a, str>> {
    let (encoding, skip) = match encoding_rs::Encoding::for_bom(bytes) {
        Some((enc, bom)) => (enc, bom),
        None => (declared_encoding(path, what, bytes)?, 0),
    };
    let body = &bytes[skip..];
    if encoding == encoding_rs::UTF_8 {
        return std::str::from_utf8(body).map(Cow::Borrowed).map_err(|e| {
            let line = 1 + body[..e.valid_up_to()]
                .iter()
                .filter(|&&b| b == b'\n')
                .count();
            err(
                path,
                what,
                Some(line as u64),
                "not UTF-8 text, and the XML declaration names no other encoding".into(),
            )
        });
    }
    encoding
        .decode_without_bom_handling_and_without_replacement(body)
        .ok_or_else(|| {
            err(
                path,
                what,
                None,
                format!("not valid {} text", encoding.name()),
            )
        })
}

/// The encoding an ASCII XML declaration names (`<?xml version="1.0" encoding="…"?>`), UTF-8
/// when there is none.
fn declared_encoding(
    path: &Path,
    what: &str,
    bytes: &[u8],
) -> Result<&'static encoding_rs::Encoding> {
    let head = &bytes[..bytes.len().min(256)];
    let Some(rest) = head.strip_prefix(b"<?xml") else {
        return Ok(encoding_rs::UTF_8);
    };
    let Some(end) = rest.windows(2).position(|w| w == b"?>") else {
        return Ok(encoding_rs::UTF_8);
    };
    let decl = String::from_utf8_lossy(&rest[..end]);
    let Some(at) = decl.find("encoding") else {
        return Ok(encoding_rs::UTF_8);
    };
    let value = decl[at + "encoding".len()..]
        .trim_start()
        .trim_start_matches('=')
        .trim_start();
    let quote = value.chars().next().unwrap_or('"');
    let label = value
        .trim_start_matches(quote)
        .split(quote)
        .next()
        .unwrap_or("");
    let encoding = encoding_rs::Encoding::for_label(label.as_bytes()).ok_or_else(|| {
        err(
            path,
            what,
            Some(1),
            format!("the XML declaration names an unknown encoding {label:?}"),
        )
    })?;
    // A declaration readable as ASCII is not UTF-16, whatever it says (UTF-16 files start
    // with a byte-order mark, handled before).
    if encoding == encoding_rs::UTF_16LE || encoding == encoding_rs::UTF_16BE {
        return Ok(encoding_rs::UTF_8);
    }
    Ok(encoding)
}

fn resolved(r: ResolveResult<'_>) -> Option<String> {
    match r {
        ResolveResult::Bound(ns) => Some(ns.0.to_string()),
        ResolveResult::Unbound | ResolveResult::Unknown(_) => None,
    }
}

fn build(path: &Path, what: &str, text: &str) -> Result<XmlElement> {
    let line_at = |offset: u64| {
        let end = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(text.len());
        1 + text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count() as u64
    };
    let mut reader = NsReader::from_str(text);
    let mut stack: Vec<XmlElement> = Vec::new();
    let mut root: Option<XmlElement> = None;
    loop {
        let (ns, event) = match reader.read_resolved_event() {
            Ok((ns, event)) => (resolved(ns), event),
            Err(e) => {
                let line = line_at(reader.error_position());
                return Err(err(path, what, Some(line), format!("malformed XML: {e}")));
            }
        };
        match event {
            Event::Start(_) | Event::Empty(_) if stack.len() >= MAX_DEPTH => {
                return Err(err(
                    path,
                    what,
                    Some(line_at(reader.buffer_position())),
                    format!("elements nested deeper than {MAX_DEPTH} levels"),
                ));
            }
            Event::Start(e) => stack.push(open(&reader, ns, &e)),
            Event::Empty(e) => {
                stack.push(open(&reader, ns, &e));
                close(&mut stack, &mut root);
            }
            Event::End(_) => close(&mut stack, &mut root),
            Event::Text(t) => push_text(&mut stack, &t.xml10_content()),
            Event::CData(t) => push_text(&mut stack, &t.xml10_content()),
            Event::GeneralRef(r) => {
                let resolved = match r.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    _ => match r.as_ref() {
                        "lt" => "<".into(),
                        "gt" => ">".into(),
                        "amp" => "&".into(),
                        "apos" => "'".into(),
                        "quot" => "\"".into(),
                        other => format!("&{other};"),
                    },
                };
                push_text(&mut stack, &resolved);
            }
            Event::Eof => break,
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
        }
    }
    if let Some(open) = stack.last() {
        return Err(err(
            path,
            what,
            Some(line_at(text.len() as u64)),
            format!("the XML ends inside <{}> (a truncated file?)", open.name),
        ));
    }
    root.ok_or_else(|| err(path, what, None, "no XML element in the file".into()))
}

/// A new element for a start tag, its attributes resolved (namespace declarations left out).
fn open(reader: &NsReader<&[u8]>, ns: Option<String>, e: &BytesStart<'_>) -> XmlElement {
    let mut element = XmlElement {
        ns,
        local: e.local_name().as_ref().to_string(),
        name: e.name().as_ref().to_string(),
        attrs: Vec::new(),
        children: Vec::new(),
    };
    for attr in e.attributes().with_checks(false).flatten() {
        let key = attr.key;
        if key.as_ref() == "xmlns" || key.as_ref().starts_with("xmlns:") {
            continue;
        }
        let (ans, local) = reader.resolver().resolve_attribute(key);
        let value = attr
            .normalized_value(XmlVersion::Implicit1_0)
            .unwrap_or_else(|_| attr.value.clone());
        element.attrs.push(XmlAttr {
            ns: resolved(ans),
            local: local.as_ref().to_string(),
            value: value.into_owned(),
        });
    }
    element
}

/// Closes the innermost open element: into its parent, or as the root.
fn close(stack: &mut Vec<XmlElement>, root: &mut Option<XmlElement>) {
    let Some(done) = stack.pop() else {
        return;
    };
    match stack.last_mut() {
        Some(parent) => parent.children.push(XmlNode::Element(done)),
        None => {
            if root.is_none() {
                *root = Some(done);
            }
        }
    }
}

fn push_text(stack: &mut [XmlElement], text: &str) {
    // Text outside the root element (only whitespace in well-formed XML) is dropped.
    let Some(top) = stack.last_mut() else {
        return;
    };
    match top.children.last_mut() {
        Some(XmlNode::Text(t)) => t.push_str(text),
        _ => top.children.push(XmlNode::Text(text.to_string())),
    }
}
