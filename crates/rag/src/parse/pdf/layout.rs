//! Text lines with their position and font → document elements. Lines close together in the
//! same font make a paragraph; a larger gap, another size or a change of boldness starts a new
//! block. A short block in a font larger than the body text (or bold, where the body is not) is
//! a heading: the largest heading size is level 1, the next level 2, and so on. Lines that start
//! with a bullet are list items; lone page numbers at the top or bottom of a page are dropped.

use crate::document::{Block, Element, SectionPath, Table, normalize_space};

/// One line of text on a page, as the extractor saw it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Line {
    pub text: String,
    /// Font size in points (the most common size among the line's characters).
    pub size: f32,
    pub bold: bool,
    /// Baseline, in points from the bottom of the page.
    pub y: f32,
    /// The line ended in a soft (discretionary) hyphen: the next line continues the word.
    pub soft_hyphen: bool,
    /// The line's runs of text separated by wide gaps, left to right, when there are two or
    /// more (table cells, if the lines around it agree).
    pub cells: Vec<Cell>,
}

/// A run of a line's text and its horizontal extent, in points.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Cell {
    pub text: String,
    pub left: f32,
    pub right: f32,
}

/// Characters that open a list item.
pub(super) const BULLETS: [char; 9] = ['•', '◦', '▪', '▫', '‣', '●', '○', '■', '–'];

/// A heading is at most this many words.
const HEADING_MAX_WORDS: usize = 20;

/// A run of lines read as one element.
struct Raw<'a> {
    page: u32,
    lines: Vec<&'a Line>,
    size: f32,
    bold: bool,
    bullet: bool,
    /// The lines are the rows of a table.
    table: bool,
}

/// Elements of a document whose pages hold `pages` (page 1 first), and its first heading.
pub(super) fn elements(pages: &[Vec<Line>]) -> (Option<String>, Vec<Element>) {
    let stats = Stats::of(pages);
    let mut raws: Vec<Raw<'_>> = Vec::new();
    for (i, lines) in pages.iter().enumerate() {
        let page = u32::try_from(i + 1).unwrap_or(u32::MAX);
        let n = lines.len();
        let mut prev: Option<&Line> = None;
        let mut j = 0;
        while j < n {
            let line = &lines[j];
            let rows = table_rows(&lines[j..]);
            if rows > 0 {
                raws.push(Raw {
                    page,
                    lines: lines[j..j + rows].iter().collect(),
                    size: line.size,
                    bold: false,
                    bullet: false,
                    table: true,
                });
                j += rows;
                prev = None;
                continue;
            }
            j += 1;
            if (j <= 2 || j + 2 > n) && is_page_number(&line.text) {
                continue;
            }
            let bullet = starts_with_bullet(&line.text);
            let continues = prev.is_some_and(|p| {
                raws.last().is_some_and(|r| {
                    r.page == page
                        && !r.table
                        && !bullet
                        && same_size(r.size, line.size)
                        && r.bold == line.bold
                        && stats.close(p, line)
                })
            });
            match raws.last_mut() {
                Some(r) if continues => r.lines.push(line),
                _ => raws.push(Raw {
                    page,
                    lines: vec![line],
                    size: line.size,
                    bold: line.bold,
                    bullet,
                    table: false,
                }),
            }
            prev = Some(line);
        }
    }

    let texts: Vec<String> = raws.iter().map(|r| join_lines(&r.lines)).collect();
    let heading: Vec<bool> = raws
        .iter()
        .zip(&texts)
        .map(|(r, t)| stats.is_heading(r, t))
        .collect();
    // Heading styles, most prominent first: bigger, then bold.
    let mut styles: Vec<(f32, bool)> = Vec::new();
    for (r, _) in raws.iter().zip(&heading).filter(|(_, h)| **h) {
        let style = (round_half(r.size), r.bold);
        if !styles.contains(&style) {
            styles.push(style);
        }
    }
    styles.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.1.cmp(&a.1)));

    let mut out = Vec::new();
    let mut sections = SectionPath::default();
    let mut title = None;
    for ((r, text), is_heading) in raws.iter().zip(texts).zip(heading) {
        let block = if r.table {
            let mut rows = r
                .lines
                .iter()
                .map(|l| l.cells.iter().map(|c| normalize_space(&c.text)).collect());
            let header = rows.next().unwrap_or_default();
            Block::Table(Table {
                header,
                rows: rows.collect(),
            })
        } else if is_heading {
            let rank = styles
                .iter()
                .position(|s| *s == (round_half(r.size), r.bold))
                .unwrap_or(0);
            let level = u8::try_from(rank + 1).unwrap_or(6).min(6);
            if title.is_none() {
                title = Some(text.clone());
            }
            Block::Heading { level, text }
        } else if r.bullet {
            let item = text.trim_start_matches(|c: char| BULLETS.contains(&c) || c == '-');
            Block::ListItem(item.trim_start().to_string())
        } else {
            Block::Paragraph(text)
        };
        if let Block::Heading { level, text } = &block {
            out.push(Element {
                section: sections.current(),
                page: Some(r.page),
                span: None,
                block: block.clone(),
            });
            sections.enter(*level, text);
            continue;
        }
        let empty = match &block {
            Block::ListItem(t) | Block::Paragraph(t) => t.is_empty(),
            _ => false,
        };
        if !empty {
            out.push(Element {
                block,
                section: sections.current(),
                page: Some(r.page),
                span: None,
            });
        }
    }
    (title, out)
}

/// What the body text of a document looks like.
struct Stats {
    /// The font size of most characters.
    body: f32,
    /// Most body characters are bold (then boldness marks no heading).
    body_bold: bool,
    /// Usual distance between the baselines of two lines of body text.
    leading: f32,
}

impl Stats {
    fn of(pages: &[Vec<Line>]) -> Stats {
        // Characters per size (in half points), and bold characters at each.
        let mut sizes: Vec<(f32, usize, usize)> = Vec::new();
        for line in pages.iter().flatten() {
            let chars = line.text.chars().filter(|c| !c.is_whitespace()).count();
            let key = round_half(line.size);
            let bold = if line.bold { chars } else { 0 };
            match sizes.iter_mut().find(|(s, _, _)| *s == key) {
                Some(entry) => {
                    entry.1 += chars;
                    entry.2 += bold;
                }
                None => sizes.push((key, chars, bold)),
            }
        }
        let (body, chars, bold) = sizes
            .iter()
            .copied()
            .max_by_key(|(_, n, _)| *n)
            .unwrap_or((10.0, 0, 0));
        let mut gaps: Vec<f32> = Vec::new();
        for lines in pages {
            for pair in lines.windows(2) {
                let gap = pair[0].y - pair[1].y;
                if same_size(pair[0].size, body)
                    && same_size(pair[1].size, body)
                    && gap > 0.5 * body
                    && gap < 3.0 * body
                {
                    gaps.push(gap);
                }
            }
        }
        gaps.sort_by(f32::total_cmp);
        let leading = gaps.get(gaps.len() / 2).copied().unwrap_or(1.2 * body);
        Stats {
            body,
            body_bold: bold * 2 > chars,
            leading,
        }
    }

    /// `next` continues the paragraph of `prev`: it is the following line, not further away
    /// than the usual leading allows.
    fn close(&self, prev: &Line, next: &Line) -> bool {
        let gap = prev.y - next.y;
        let size = prev.size.max(next.size);
        let usual = (self.leading * size / self.body).max(size);
        gap > 0.3 * size && gap <= 1.3 * usual
    }

    fn is_heading(&self, r: &Raw<'_>, text: &str) -> bool {
        if r.table || r.bullet || r.lines.len() > 3 || text.len() > 200 {
            return false;
        }
        let words = text.split_whitespace().count();
        if words == 0 || words > HEADING_MAX_WORDS || !text.chars().any(char::is_alphabetic) {
            return false;
        }
        if text.ends_with([',', ';', ':']) {
            return false;
        }
        let larger = r.size >= self.body * 1.15;
        let bold = r.bold && !self.body_bold && r.size >= self.body - 0.5;
        larger || bold
    }
}

/// How many lines from the first of `lines` make a table: three or more in a row, each cut into
/// the same number (two or more) of cells whose columns line up with the row above, holding short
/// cells (two text columns of prose are no table) that are not list markers and text; 0 when they
/// do not.
fn table_rows(lines: &[Line]) -> usize {
    let Some(first) = lines.first() else {
        return 0;
    };
    let columns = first.cells.len();
    if columns < 2 {
        return 0;
    }
    let mut rows = 1;
    while rows < lines.len()
        && lines[rows].cells.len() == columns
        && columns_line_up(&lines[rows - 1], &lines[rows])
    {
        rows += 1;
    }
    if rows < MIN_TABLE_ROWS {
        return 0;
    }
    // A first column of bullets or item numbers is a list with hanging indents.
    if lines[..rows]
        .iter()
        .all(|l| is_item_marker(&l.cells[0].text))
    {
        return 0;
    }
    let words: usize = lines[..rows]
        .iter()
        .flat_map(|l| &l.cells)
        .map(|c| c.text.split_whitespace().count())
        .sum();
    if words > MAX_CELL_WORDS * rows * columns {
        return 0;
    }
    rows
}

/// A table has a header and at least two rows (two lines that happen to line up are too often
/// a numbered heading or a signature block).
const MIN_TABLE_ROWS: usize = 3;

/// A list item's marker: a bullet, or a short number or letter closed by `.` or `)`
/// (`1.`, `2.3.`, `(a)`, `iv)`).
fn is_item_marker(text: &str) -> bool {
    let t = text.trim();
    if t.chars().count() == 1 {
        return t.starts_with(BULLETS) || matches!(t, "-" | "*" | "o" | "·");
    }
    let body = t.trim_start_matches('(');
    body.len() <= 6
        && body.ends_with(['.', ')'])
        && body
            .trim_end_matches(['.', ')'])
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.')
}

/// Cells of a table hold this many words on average at most.
const MAX_CELL_WORDS: usize = 4;

/// Each cell of `b` overlaps the cell above it in `a`, or starts within a font size of it.
fn columns_line_up(a: &Line, b: &Line) -> bool {
    let slack = a.size.max(b.size);
    a.cells
        .iter()
        .zip(&b.cells)
        .all(|(x, y)| (x.left <= y.right && y.left <= x.right) || (x.left - y.left).abs() <= slack)
}

fn same_size(a: f32, b: f32) -> bool {
    (a - b).abs() <= 0.5
}

fn round_half(size: f32) -> f32 {
    (size * 2.0).round() / 2.0
}

pub(super) fn starts_with_bullet(text: &str) -> bool {
    let mut chars = text.trim_start().chars();
    let first = chars.next();
    let second = chars.next();
    first.is_some_and(|c| BULLETS.contains(&c) || c == '-')
        && second.is_some_and(char::is_whitespace)
}

/// A line holding only a page number: `7`, `- 7 -`, `Page 7`, `Page 7 of 9`, `7/9`.
pub(super) fn is_page_number(text: &str) -> bool {
    let lower = text.to_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    let numeric = |w: &&str| w.len() <= 4 && w.chars().all(|c| c.is_ascii_digit());
    match words.as_slice() {
        [n] => numeric(n),
        ["page", n] => numeric(n),
        [n, m] => numeric(n) && numeric(m) && lower.contains('/'),
        ["page", n, "of", m] => numeric(n) && numeric(m),
        [n, "of", m] => numeric(n) && numeric(m),
        _ => false,
    }
}

/// The lines of a block as one text: a soft hyphen, or a hyphen between letters where the next
/// line starts in lower case, joins the word; other lines are joined with a space.
fn join_lines(lines: &[&Line]) -> String {
    let mut out = String::new();
    for (i, line) in lines.iter().enumerate() {
        let text = normalize_space(&line.text);
        if i > 0 && !out.is_empty() {
            let prev = lines[i - 1];
            let hyphenated = out.ends_with('-')
                && out.chars().rev().nth(1).is_some_and(char::is_alphabetic)
                && text.chars().next().is_some_and(char::is_lowercase);
            if !prev.soft_hyphen && !hyphenated {
                out.push(' ');
            }
        }
        out.push_str(&text);
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code fails loudly")]

    use super::*;
    use crate::document::ElementKind;

    fn line(text: &str, size: f32, bold: bool, y: f32) -> Line {
        Line {
            text: text.to_string(),
            size,
            bold,
            y,
            soft_hyphen: false,
            cells: Vec::new(),
        }
    }

    #[test]
    fn page_numbers_are_recognized() {
        for yes in ["7", "- 7 -", "Page 7", "page 7 of 9", "7 / 9", "-8-"] {
            assert!(is_page_number(yes), "{yes}");
        }
        for no in ["7 days", "Section 7", "2026 budget", "12345", "a"] {
            assert!(!is_page_number(no), "{no}");
        }
    }

    #[test]
    fn hyphens_join_words_only_where_the_next_line_goes_on_in_lower_case() {
        let a = line("the inter-", 10.0, false, 100.0);
        let b = line("national office", 10.0, false, 88.0);
        let c = line("Self-", 10.0, false, 76.0);
        let d = line("Assessment", 10.0, false, 64.0);
        assert_eq!(join_lines(&[&a, &b]), "the inter-national office");
        assert_eq!(join_lines(&[&c, &d]), "Self- Assessment");
        let mut soft = line("docu", 10.0, false, 100.0);
        soft.soft_hyphen = true;
        assert_eq!(join_lines(&[&soft, &b]), "docunational office");
    }

    #[test]
    fn gaps_sizes_and_bold_split_blocks_and_rank_headings() {
        let pages = vec![
            vec![
                line("Guide", 20.0, true, 800.0),
                line("First line of a paragraph that goes", 10.0, false, 770.0),
                line("on here.", 10.0, false, 758.0),
                line("A second paragraph after a gap.", 10.0, false, 736.0),
                line("Setup", 14.0, true, 710.0),
                line("• one item", 10.0, false, 690.0),
                line("• another item", 10.0, false, 678.0),
                line("Notes", 10.0, true, 650.0),
                line("Body under a bold heading.", 10.0, false, 638.0),
                line("3", 9.0, false, 40.0),
            ],
            vec![line("More text on page two.", 10.0, false, 800.0)],
        ];
        let (title, els) = elements(&pages);
        assert_eq!(title.as_deref(), Some("Guide"));
        let got: Vec<(Block, Vec<String>, Option<u32>)> = els
            .into_iter()
            .map(|e| (e.block, e.section, e.page))
            .collect();
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let p = |t: &str| Block::Paragraph(t.to_string());
        let h = |level, t: &str| Block::Heading {
            level,
            text: t.to_string(),
        };
        assert_eq!(
            got,
            vec![
                (h(1, "Guide"), s(&[]), Some(1)),
                (
                    p("First line of a paragraph that goes on here."),
                    s(&["Guide"]),
                    Some(1)
                ),
                (p("A second paragraph after a gap."), s(&["Guide"]), Some(1)),
                (h(2, "Setup"), s(&["Guide"]), Some(1)),
                (
                    Block::ListItem("one item".into()),
                    s(&["Guide", "Setup"]),
                    Some(1)
                ),
                (
                    Block::ListItem("another item".into()),
                    s(&["Guide", "Setup"]),
                    Some(1)
                ),
                (h(3, "Notes"), s(&["Guide", "Setup"]), Some(1)),
                (
                    p("Body under a bold heading."),
                    s(&["Guide", "Setup", "Notes"]),
                    Some(1)
                ),
                (
                    p("More text on page two."),
                    s(&["Guide", "Setup", "Notes"]),
                    Some(2)
                ),
            ]
        );
    }

    fn row(cells: &[(&str, f32)], y: f32) -> Line {
        let cells: Vec<Cell> = cells
            .iter()
            .map(|(t, left)| Cell {
                text: t.to_string(),
                left: *left,
                right: left + 5.0 * t.len() as f32,
            })
            .collect();
        let text = cells
            .iter()
            .map(|c| c.text.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        Line {
            cells,
            ..line(&text, 10.0, false, y)
        }
    }

    #[test]
    fn a_grid_of_short_cells_is_a_table_and_two_columns_of_prose_are_not() {
        let pages = vec![vec![
            line("Prices", 14.0, true, 800.0),
            row(&[("Item", 72.0), ("Price", 200.0)], 780.0),
            row(&[("Hammer", 72.0), ("12", 210.0)], 768.0),
            row(&[("Saw", 72.0), ("30", 205.0)], 756.0),
            line("Prices include tax.", 10.0, false, 730.0),
            row(
                &[
                    ("the left column of a page set in two columns", 72.0),
                    ("while the right column tells another story", 320.0),
                ],
                700.0,
            ),
            row(
                &[
                    ("goes on here with many more words than any", 72.0),
                    ("table cell would hold in a real document", 320.0),
                ],
                688.0,
            ),
        ]];
        let (_, els) = elements(&pages);
        let kinds: Vec<ElementKind> = els.iter().map(|e| e.block.kind()).collect();
        use ElementKind::*;
        assert_eq!(kinds, [Heading, Table, Paragraph, Paragraph]);
        let Block::Table(t) = &els[1].block else {
            panic!()
        };
        assert_eq!(t.header, ["Item", "Price"]);
        assert_eq!(t.rows, [["Hammer", "12"], ["Saw", "30"]]);
        assert_eq!(els[1].section, ["Prices"]);
        assert!(matches!(&els[3].block, Block::Paragraph(p) if p.starts_with("the left column")));
    }
}
