//! XBRL instance documents (the financial-report format of the SEC, ESMA and others): every
//! fact becomes a row of one table — concept, period, entity, dimensions (when any context has
//! them), unit, decimals, value — with its context and unit resolved (`2023-01-01 to
//! 2023-12-31`, `USD`, `USD/shares`). Long text facts (text blocks, which hold escaped HTML)
//! follow the table as paragraphs under the concept's name. Schema and linkbase references,
//! footnote links and other linkbase content are left out. The title comes from the `dei`
//! cover facts (registrant, document type, period end) when the instance has them.

use std::collections::HashMap;

use super::Parsed;
use super::xml_tree::XmlElement;
use crate::document::{Block, Element, Table, normalize_space};

const XBRLI: &str = "http://www.xbrl.org/2003/instance";
const LINK: &str = "http://www.xbrl.org/2003/linkbase";
const XBRLDI: &str = "http://xbrl.org/2006/xbrldi";
const XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";
/// SEC cover-page taxonomies (`…/dei/2023`); the year varies.
const DEI_PREFIX: &str = "http://xbrl.sec.gov/dei/";
/// A text fact longer than this is a paragraph after the table rather than a cell in it.
const MAX_CELL_CHARS: usize = 200;

pub(super) fn is_instance(root: &XmlElement) -> bool {
    root.is(XBRLI, "xbrl")
}

#[derive(Debug, Default)]
struct Context {
    entity: String,
    period: String,
    dimensions: Vec<String>,
}

#[derive(Debug)]
struct Fact {
    /// The concept as written (`us-gaap:Revenues`).
    concept: String,
    /// The concept's name without prefix, for cover facts of the `dei` taxonomy.
    dei: Option<String>,
    context: String,
    unit: String,
    decimals: String,
    value: String,
}

pub(super) fn parse(root: &XmlElement) -> Parsed {
    let mut contexts = HashMap::new();
    let mut units = HashMap::new();
    for e in root.elements() {
        let Some(id) = e.attr(None, "id") else {
            continue;
        };
        if e.is(XBRLI, "context") {
            contexts.insert(id.to_string(), context(e));
        } else if e.is(XBRLI, "unit") {
            units.insert(id.to_string(), unit(e));
        }
    }
    let mut facts = Vec::new();
    collect_facts(root, "", &mut facts);

    let mut title_parts: [Option<String>; 3] = [None, None, None];
    let with_dimensions = facts.iter().any(|f| {
        contexts
            .get(&f.context)
            .is_some_and(|c: &Context| !c.dimensions.is_empty())
    });
    let mut header: Vec<String> = ["concept", "period", "entity"].map(String::from).to_vec();
    if with_dimensions {
        header.push("dimensions".into());
    }
    header.extend(["unit", "decimals", "value"].map(String::from));
    let mut rows = Vec::new();
    let mut texts = Vec::new();
    for f in &facts {
        let ctx = contexts.get(&f.context);
        if let Some(slot) = match f.dei.as_deref().unwrap_or_default() {
            "EntityRegistrantName" => Some(0),
            "DocumentType" => Some(1),
            "DocumentPeriodEndDate" => Some(2),
            _ => None,
        } && title_parts[slot].is_none()
        {
            title_parts[slot] = Some(f.value.clone());
        }
        if f.value.chars().count() > MAX_CELL_CHARS {
            texts.push(f);
            continue;
        }
        let mut row = vec![
            f.concept.clone(),
            ctx.map_or_else(|| format!("(context {})", f.context), |c| c.period.clone()),
            ctx.map(|c| c.entity.clone()).unwrap_or_default(),
        ];
        if with_dimensions {
            row.push(ctx.map(|c| c.dimensions.join("; ")).unwrap_or_default());
        }
        let unit = if f.unit.is_empty() {
            String::new()
        } else {
            units
                .get(&f.unit)
                .cloned()
                .unwrap_or_else(|| format!("(unit {})", f.unit))
        };
        row.extend([unit, f.decimals.clone(), f.value.clone()]);
        rows.push(row);
    }
    let mut elements = Vec::new();
    if !rows.is_empty() {
        elements.push(element(Block::Table(Table { header, rows }), Vec::new()));
    }
    for f in texts {
        let section = match contexts.get(&f.context) {
            Some(c) => vec![format!("{} ({})", f.concept, c.period)],
            None => vec![f.concept.clone()],
        };
        for para in f.value.split('\n').map(normalize_space) {
            if !para.is_empty() {
                elements.push(element(Block::Paragraph(para), section.clone()));
            }
        }
    }
    // The report is dated by the end of the period it reports on.
    let date = title_parts[2].as_deref().and_then(crate::date::parse);
    let title: Vec<String> = title_parts.into_iter().flatten().collect();
    Parsed {
        title: (!title.is_empty()).then(|| title.join(" ")),
        date,
        elements,
    }
}

fn element(block: Block, section: Vec<String>) -> Element {
    Element {
        block,
        section,
        page: None,
        span: None,
    }
}

/// Facts under `parent` in document order; a tuple (a fact made of facts) names its members
/// `tuple/member`.
fn collect_facts(parent: &XmlElement, prefix: &str, out: &mut Vec<Fact>) {
    for e in parent.elements() {
        let ns = e.ns.as_deref().unwrap_or("");
        if ns == XBRLI || ns == LINK {
            continue;
        }
        let concept = format!("{prefix}{}", e.name);
        let Some(context) = e.attr(None, "contextRef") else {
            if e.elements().next().is_some() {
                collect_facts(e, &format!("{concept}/"), out);
            }
            continue;
        };
        let nil = e
            .attr(Some(XSI), "nil")
            .is_some_and(|v| v == "true" || v == "1");
        let value = if nil {
            "(nil)".to_string()
        } else {
            text_value(&e.text())
        };
        let decimals = match (e.attr(None, "decimals"), e.attr(None, "precision")) {
            (Some(d), _) => d.to_string(),
            (None, Some(p)) => format!("precision {p}"),
            (None, None) => String::new(),
        };
        out.push(Fact {
            dei: ns.starts_with(DEI_PREFIX).then(|| e.local.clone()),
            concept,
            context: context.to_string(),
            unit: e.attr(None, "unitRef").unwrap_or_default().to_string(),
            decimals,
            value,
        });
    }
}

/// A fact's text: escaped HTML (text blocks) reduced to its text, one line per block element.
fn text_value(raw: &str) -> String {
    let trimmed = raw.trim();
    if !(trimmed.starts_with('<') && trimmed.contains('>')) {
        return normalize_space(trimmed);
    }
    let elements = super::html::parse(trimmed).elements;
    let lines: Vec<String> = elements
        .into_iter()
        .map(|e| match e.block {
            Block::Heading { text, .. } | Block::Paragraph(text) | Block::ListItem(text) => text,
            Block::Code(code) => normalize_space(&code),
            Block::Table(t) => {
                let mut lines = vec![t.header_line()];
                lines.extend((0..t.rows.len()).map(|i| t.row_line(i)));
                lines.join("\n")
            }
        })
        .collect();
    lines.join("\n")
}

fn context(e: &XmlElement) -> Context {
    let mut c = Context::default();
    if let Some(entity) = e.child(XBRLI, "entity") {
        if let Some(id) = entity.child(XBRLI, "identifier") {
            c.entity = normalize_space(&id.text());
        }
        if let Some(segment) = entity.child(XBRLI, "segment") {
            c.dimensions.extend(members(segment));
        }
    }
    if let Some(scenario) = e.child(XBRLI, "scenario") {
        c.dimensions.extend(members(scenario));
    }
    if let Some(p) = e.child(XBRLI, "period") {
        let date = |name| p.child(XBRLI, name).map(|d| normalize_space(&d.text()));
        c.period = if let Some(instant) = date("instant") {
            instant
        } else if p.child(XBRLI, "forever").is_some() {
            "forever".to_string()
        } else {
            let start = date("startDate").unwrap_or_default();
            let end = date("endDate").unwrap_or_default();
            format!("{start} to {end}")
        };
    }
    c
}

/// `dimension=member` for explicit and typed members of a segment or scenario.
fn members(e: &XmlElement) -> Vec<String> {
    e.elements()
        .filter_map(|m| {
            let dimension = m.attr(None, "dimension")?;
            if m.is(XBRLDI, "explicitMember") || m.is(XBRLDI, "typedMember") {
                Some(format!("{dimension}={}", normalize_space(&m.text())))
            } else {
                None
            }
        })
        .collect()
}

/// A unit as measures (`USD`, `shares`, `USD/shares`), prefixes dropped.
fn unit(e: &XmlElement) -> String {
    let measures = |parent: &XmlElement| -> String {
        parent
            .elements()
            .filter(|m| m.is(XBRLI, "measure"))
            .map(|m| {
                let text = normalize_space(&m.text());
                match text.rsplit_once(':') {
                    Some((_, local)) => local.to_string(),
                    None => text,
                }
            })
            .collect::<Vec<_>>()
            .join("*")
    };
    match e.child(XBRLI, "divide") {
        Some(d) => {
            let num = d.child(XBRLI, "unitNumerator").map(measures);
            let den = d.child(XBRLI, "unitDenominator").map(measures);
            format!("{}/{}", num.unwrap_or_default(), den.unwrap_or_default())
        }
        None => measures(e),
    }
}
