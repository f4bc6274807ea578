//! Structure-aware chunking: a document is cut at section boundaries first; within a section,
//! prose is packed by sentences up to the token budget with an overlap of trailing sentences,
//! tables stay whole when they fit and are otherwise split by rows with the header line repeated
//! in every part, and code is split by lines. Sizes are measured with the embedding model's own
//! tokenizer, so every chunk fits the model without truncation.
//!
//! The element-type-aware cutting follows Jimeno Yepes et al., "Financial Report Chunking for
//! Effective Retrieval Augmented Generation" (arXiv 2402.05131).

use std::ops::Range;

use crate::document::{Block, Document, Element, ElementKind};
use crate::error::{RagError, Result};

/// Counts the tokens of a text as the embedding model reads it (special tokens included).
pub type TokenCounter<'a> = &'a dyn Fn(&str) -> Result<usize>;

/// Sizes of chunks, in tokens of the embedding model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkOptions {
    /// Most tokens of a chunk's [`Chunk::embedding_text`], special tokens included.
    pub max_tokens: usize,
    /// Tokens of prose repeated from the end of one chunk at the start of the next in the same
    /// section (whole sentences, at most this many).
    pub overlap_tokens: usize,
}

impl ChunkOptions {
    /// Defaults for a model reading `max_tokens` at most: chunks of up to 256 tokens and an
    /// overlap of an eighth of that.
    pub fn for_model(max_tokens: usize) -> Self {
        let max_tokens = max_tokens.clamp(16, 256);
        ChunkOptions {
            max_tokens,
            overlap_tokens: max_tokens / 8,
        }
    }
}

/// A piece of a document, sized for the embedding model.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    /// Position of the chunk in its document, from 0.
    pub ordinal: usize,
    /// The chunk's own text (what a reader or the answering model sees).
    pub text: String,
    /// Document title and section path as one line (`Title > Section > Subsection`): embedded
    /// and indexed with the text, so a chunk is found by the headings above it too.
    pub context: String,
    /// Headings above the chunk, outermost first.
    pub section: Vec<String>,
    /// 1-based page of the chunk's first element, when the format has pages.
    pub page: Option<u32>,
    /// `Table`, `Code`, the one prose kind of its elements, or `Text` for mixed prose.
    pub kind: ElementKind,
    /// Byte range in the source text covering the chunk's elements, when known.
    pub span: Option<Range<usize>>,
    /// Tokens of [`Chunk::embedding_text`], special tokens included.
    pub tokens: usize,
}

impl Chunk {
    /// What is embedded and indexed: the context line, then the text.
    pub fn embedding_text(&self) -> String {
        embedding_text(&self.context, &self.text)
    }
}

fn embedding_text(context: &str, text: &str) -> String {
    if context.is_empty() {
        text.to_string()
    } else {
        format!("{context}\n{text}")
    }
}

/// A piece of an element with its token cost (special tokens not counted).
#[derive(Debug, Clone)]
struct Unit {
    text: String,
    tokens: usize,
    kind: ElementKind,
    page: Option<u32>,
    span: Option<Range<usize>>,
}

/// Cuts `doc` into chunks of at most `options.max_tokens` tokens as `count` measures them.
pub fn chunk_document(
    doc: &Document,
    options: ChunkOptions,
    count: TokenCounter<'_>,
) -> Result<Vec<Chunk>> {
    if options.max_tokens == 0 || options.overlap_tokens >= options.max_tokens {
        return Err(RagError::Input(format!(
            "chunks of {} tokens cannot overlap by {}",
            options.max_tokens, options.overlap_tokens
        )));
    }
    let mut c = Chunker {
        options,
        count,
        special: count("")?,
        chunks: Vec::new(),
    };
    for (section, elements) in sections(&doc.elements) {
        if elements
            .iter()
            .all(|e| matches!(e.block, Block::Heading { .. }))
        {
            continue;
        }
        let context = context_line(&doc.title, &section);
        let budget = c.budget(&context)?;
        let mut prose: Vec<Unit> = Vec::new();
        for e in elements {
            match &e.block {
                Block::Heading { .. } => {}
                Block::Paragraph(t) | Block::ListItem(t) => {
                    let text = match e.block {
                        Block::ListItem(_) => format!("- {t}"),
                        _ => t.clone(),
                    };
                    for s in sentences(&text) {
                        prose.extend(c.units(s, e, budget)?);
                    }
                }
                Block::Table(table) => {
                    c.pack_prose(&context, &section, std::mem::take(&mut prose), budget)?;
                    c.table(&context, &section, e, table, budget)?;
                }
                Block::Code(code) => {
                    c.pack_prose(&context, &section, std::mem::take(&mut prose), budget)?;
                    let mut lines = Vec::new();
                    for line in code.lines() {
                        lines.extend(c.units(line, e, budget)?);
                    }
                    c.pack(
                        &context,
                        &section,
                        lines,
                        budget,
                        0,
                        Some(ElementKind::Code),
                    )?;
                }
            }
        }
        c.pack_prose(&context, &section, prose, budget)?;
    }
    Ok(c.chunks)
}

struct Chunker<'a> {
    options: ChunkOptions,
    count: TokenCounter<'a>,
    /// Tokens the counter adds to any text (`[CLS]`, `[SEP]`).
    special: usize,
    chunks: Vec<Chunk>,
}

impl Chunker<'_> {
    /// Tokens of `text` without the special tokens.
    fn cost(&self, text: &str) -> Result<usize> {
        Ok((self.count)(text)?.saturating_sub(self.special))
    }

    /// Tokens left for text under the context line.
    fn budget(&self, context: &str) -> Result<usize> {
        let fixed = (self.count)(&embedding_text(context, "x"))?.saturating_sub(self.cost("x")?);
        if fixed + 4 > self.options.max_tokens {
            return Err(RagError::Input(format!(
                "the section path {context:?} alone takes {fixed} of the {} tokens of a chunk",
                self.options.max_tokens
            )));
        }
        Ok(self.options.max_tokens - fixed)
    }

    /// `text` of element `e` as units of at most `budget` tokens (split by words if needed).
    fn units(&self, text: &str, e: &Element, budget: usize) -> Result<Vec<Unit>> {
        let unit = |text: String, tokens| Unit {
            text,
            tokens,
            kind: e.block.kind(),
            page: e.page,
            span: e.span.clone(),
        };
        if text.trim().is_empty() {
            return Ok(Vec::new());
        }
        let tokens = self.cost(text)?;
        if tokens <= budget {
            return Ok(vec![unit(text.to_string(), tokens)]);
        }
        self.split_words(text, budget)?
            .into_iter()
            .map(|(t, n)| Ok(unit(t, n)))
            .collect()
    }

    /// Splits a text too long for `budget` into runs of words that fit (a single word longer
    /// than the budget is cut by characters).
    fn split_words(&self, text: &str, budget: usize) -> Result<Vec<(String, usize)>> {
        let words: Vec<&str> = text.split_whitespace().collect();
        let mut out = Vec::new();
        let mut i = 0;
        while i < words.len() {
            // Grow while it fits: doubling, then the last step back.
            let mut n = 1;
            let piece = |n: usize| words[i..(i + n).min(words.len())].join(" ");
            while i + n < words.len() && self.cost(&piece(n * 2))? <= budget {
                n *= 2;
            }
            let (mut lo, mut hi) = (n, (n * 2).min(words.len() - i));
            while lo < hi {
                let mid = (lo + hi).div_ceil(2);
                if self.cost(&piece(mid))? <= budget {
                    lo = mid;
                } else {
                    hi = mid - 1;
                }
            }
            let text = piece(lo);
            let tokens = self.cost(&text)?;
            if tokens > budget {
                out.extend(self.split_chars(&text, budget)?);
            } else {
                out.push((text, tokens));
            }
            i += lo;
        }
        Ok(out)
    }

    fn split_chars(&self, word: &str, budget: usize) -> Result<Vec<(String, usize)>> {
        let chars: Vec<char> = word.chars().collect();
        let mut out = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let mut n = (chars.len() - i).min(budget.max(1) * 2);
            loop {
                let piece: String = chars[i..i + n].iter().collect();
                let tokens = self.cost(&piece)?;
                if tokens <= budget || n == 1 {
                    out.push((piece, tokens));
                    break;
                }
                n = (n / 2).max(1);
            }
            i += n;
        }
        Ok(out)
    }

    fn pack_prose(
        &mut self,
        context: &str,
        section: &[String],
        units: Vec<Unit>,
        budget: usize,
    ) -> Result<()> {
        let overlap = self.options.overlap_tokens;
        self.pack(context, section, units, budget, overlap, None)
    }

    /// Packs units greedily into chunks; a new chunk starts with trailing units of the previous
    /// one worth at most `overlap` tokens. `kind` overrides the kind the units give.
    fn pack(
        &mut self,
        context: &str,
        section: &[String],
        units: Vec<Unit>,
        budget: usize,
        overlap: usize,
        kind: Option<ElementKind>,
    ) -> Result<()> {
        let mut current: Vec<Unit> = Vec::new();
        let mut used = 0;
        let mut fresh = 0; // units in `current` not carried over from the previous chunk
        for u in units {
            if !current.is_empty() && used + u.tokens > budget {
                self.emit(context, section, &current, kind, "\n")?;
                let mut carried = Vec::new();
                let mut carried_tokens = 0;
                for prev in current.iter().rev() {
                    if carried_tokens + prev.tokens > overlap
                        || carried_tokens + prev.tokens + u.tokens > budget
                    {
                        break;
                    }
                    carried_tokens += prev.tokens;
                    carried.push(prev.clone());
                }
                carried.reverse();
                current = carried;
                used = carried_tokens;
                fresh = 0;
            }
            used += u.tokens;
            current.push(u);
            fresh += 1;
        }
        if fresh > 0 {
            self.emit(context, section, &current, kind, "\n")?;
        }
        Ok(())
    }

    /// A table: whole when it fits, else runs of rows each under the header line.
    fn table(
        &mut self,
        context: &str,
        section: &[String],
        e: &Element,
        table: &crate::document::Table,
        budget: usize,
    ) -> Result<()> {
        let header = table.header_line();
        let header_tokens = if header.is_empty() {
            0
        } else {
            self.cost(&header)?
        };
        let row_budget = budget.saturating_sub(header_tokens);
        if row_budget < 4 {
            return Err(RagError::Input(format!(
                "the header of a table in {context:?} takes {header_tokens} of the {budget} \
                 tokens a chunk has room for"
            )));
        }
        let mut rows = Vec::new();
        for i in 0..table.rows.len() {
            let mut units = self.units(&table.row_line(i), e, row_budget)?;
            rows.append(&mut units);
        }
        let head = |e: &Element| Unit {
            text: header.clone(),
            tokens: header_tokens,
            kind: ElementKind::Table,
            page: e.page,
            span: e.span.clone(),
        };
        let mut current: Vec<Unit> = Vec::new();
        let mut used = 0;
        for r in rows {
            if !current.is_empty() && used + r.tokens > row_budget {
                self.emit_table(context, section, &header, head(e), &current)?;
                current.clear();
                used = 0;
            }
            used += r.tokens;
            current.push(r);
        }
        if !current.is_empty() || !header.is_empty() {
            self.emit_table(context, section, &header, head(e), &current)?;
        }
        Ok(())
    }

    fn emit_table(
        &mut self,
        context: &str,
        section: &[String],
        header: &str,
        head: Unit,
        rows: &[Unit],
    ) -> Result<()> {
        let mut units = Vec::with_capacity(rows.len() + 1);
        if !header.is_empty() {
            units.push(head);
        }
        units.extend(rows.iter().cloned());
        self.emit(context, section, &units, Some(ElementKind::Table), "\n")
    }

    fn emit(
        &mut self,
        context: &str,
        section: &[String],
        units: &[Unit],
        kind: Option<ElementKind>,
        sep: &str,
    ) -> Result<()> {
        let Some(first) = units.first() else {
            return Ok(());
        };
        let text = units
            .iter()
            .map(|u| u.text.as_str())
            .collect::<Vec<_>>()
            .join(sep);
        let kind = kind.unwrap_or_else(|| {
            if units.iter().all(|u| u.kind == first.kind) {
                first.kind
            } else {
                ElementKind::Text
            }
        });
        let span = units
            .iter()
            .filter_map(|u| u.span.clone())
            .reduce(|a, b| a.start.min(b.start)..a.end.max(b.end));
        let tokens = (self.count)(&embedding_text(context, &text))?;
        if tokens > self.options.max_tokens && units.len() > 1 {
            // Token counts of pieces need not add up exactly at the joins: split and retry.
            let mid = units.len() / 2;
            self.emit(context, section, &units[..mid], Some(kind), sep)?;
            return self.emit(context, section, &units[mid..], Some(kind), sep);
        }
        self.chunks.push(Chunk {
            ordinal: self.chunks.len(),
            text,
            context: context.to_string(),
            section: section.to_vec(),
            page: first.page,
            kind,
            span,
            tokens,
        });
        Ok(())
    }
}

/// Runs of consecutive elements that share a section path; a heading opens the section it
/// names.
fn sections(elements: &[Element]) -> Vec<(Vec<String>, Vec<&Element>)> {
    let mut out: Vec<(Vec<String>, Vec<&Element>)> = Vec::new();
    for e in elements {
        let path = match &e.block {
            Block::Heading { text, .. } => {
                let mut p = e.section.clone();
                p.push(text.clone());
                p
            }
            _ => e.section.clone(),
        };
        let opens = matches!(e.block, Block::Heading { .. });
        match out.last_mut() {
            Some((p, items)) if !opens && *p == path => items.push(e),
            _ => out.push((path, vec![e])),
        }
    }
    out
}

/// `Title > Section > Subsection`, without repeating a title that is also the first heading.
fn context_line(title: &str, section: &[String]) -> String {
    let mut parts: Vec<&str> = Vec::new();
    if !title.is_empty() && section.first().is_none_or(|s| s != title) {
        parts.push(title);
    }
    parts.extend(section.iter().map(String::as_str));
    parts.join(" > ")
}

/// Splits prose after sentence ends (`.`, `!`, `?`, `;` or `:` followed by a space), keeping
/// the punctuation.
fn sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let bytes = text.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if matches!(b, b'.' | b'!' | b'?' | b';')
            && bytes.get(i + 1) == Some(&b' ')
            && i + 1 > start
        {
            out.push(text[start..=i].trim());
            start = i + 1;
        }
    }
    if start < text.len() && !text[start..].trim().is_empty() {
        out.push(text[start..].trim());
    }
    out
}
