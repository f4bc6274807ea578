//! Rendering a model's own Jinja chat template (as `transformers.apply_chat_template` does):
//! minijinja with Python string methods, `raise_exception`, `strftime_now`, HF's block
//! trimming, and the `{% generation %}` markers rendering their body.

use minijinja::{Environment, ErrorKind, Value};
use serde::Serialize;

use crate::error::{EngineError, Result};

/// One chat message. `content` is text; tool calls and tool results ride along as JSON.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Message {
    pub role: String,
    pub content: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl Message {
    pub fn new(role: &str, content: &str) -> Self {
        Message {
            role: role.into(),
            content: content.into(),
            tool_calls: None,
            name: None,
            tool_call_id: None,
        }
    }
}

/// A compiled chat template.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    origin: String,
}

/// Fuel for one render: templates are small programs; a runaway loop stops with an error.
const RENDER_FUEL: u64 = 50_000_000;

/// transformers' `{% generation %}…{% endgeneration %}` marks assistant text for training masks
/// and renders its body unchanged; minijinja has no such tag, so each becomes an always-true
/// `if` block with the same whitespace control (`{%-`, `-%}`, any spacing).
fn rewrite_generation_tags(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(open) = rest.find("{%") {
        let Some(len) = rest[open..].find("%}") else {
            break;
        };
        let block = &rest[open..open + len + 2];
        let inner = &block[2..block.len() - 2];
        let body = inner
            .trim_start_matches(['-', '+'])
            .trim_end_matches(['-', '+']);
        let lead = &inner[..inner.len() - inner.trim_start_matches(['-', '+']).len()];
        let trail = &inner[inner.trim_end_matches(['-', '+']).len()..];
        let replacement = match body.trim() {
            "generation" => Some("if true"),
            "endgeneration" => Some("endif"),
            _ => None,
        };
        out.push_str(&rest[..open]);
        match replacement {
            Some(r) => out.push_str(&format!("{{%{lead} {r} {trail}%}}")),
            None => out.push_str(block),
        }
        rest = &rest[open + len + 2..];
    }
    out.push_str(rest);
    out
}

impl ChatTemplate {
    pub fn new(source: &str, origin: &str) -> Result<Self> {
        let mut env = Environment::new();
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| EngineError::Template {
                origin: origin.into(),
                what: e.to_string(),
            })?;
        env.set_syntax(syntax);
        env.set_fuel(Some(RENDER_FUEL));
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_filter("tojson", tojson);
        env.add_filter("indent", indent);
        // jinja2: None and numbers are not iterable, Undefined is (minijinja iterates none).
        env.add_test("iterable", |v: Value| !v.is_none() && v.try_iter().is_ok());
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<Value, minijinja::Error> {
                Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
            },
        );
        env.add_function("strftime_now", |fmt: String| -> String {
            strftime_now(&fmt)
        });
        env.add_template_owned("chat", rewrite_generation_tags(source))
            .map_err(|e| EngineError::Template {
                origin: origin.into(),
                what: describe(&e),
            })?;
        Ok(ChatTemplate {
            env,
            origin: origin.to_string(),
        })
    }

    /// Makes `strftime_now` report the fixed UNIX time `secs` (reproducible renderings).
    pub fn set_fixed_time(&mut self, secs: u64) {
        self.env
            .add_function("strftime_now", move |fmt: String| -> String {
                format_time(secs, &fmt)
            });
    }

    /// Renders `messages` (with `tools` when given) into the prompt text.
    pub fn render(
        &self,
        messages: &[Message],
        tools: Option<&serde_json::Value>,
        add_generation_prompt: bool,
        bos_token: &str,
        eos_token: &str,
    ) -> Result<String> {
        let tmpl = self
            .env
            .get_template("chat")
            .map_err(|e| EngineError::Template {
                origin: self.origin.clone(),
                what: describe(&e),
            })?;
        let ctx = minijinja::context! {
            messages => Value::from(minijinja::value::Serde(messages)),
            tools => tools.map(|t| Value::from(minijinja::value::Serde(t))),
            add_generation_prompt => add_generation_prompt,
            bos_token => bos_token,
            eos_token => eos_token,
        };
        tmpl.render(ctx).map_err(|e| EngineError::Template {
            origin: self.origin.clone(),
            what: describe(&e),
        })
    }
}

/// Python's `str.splitlines()`.
fn split_lines(s: &str) -> Vec<&str> {
    let mut lines = Vec::new();
    let mut start = 0;
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let is_break = matches!(
            c,
            '\n' | '\r'
                | '\x0b'
                | '\x0c'
                | '\x1c'
                | '\x1d'
                | '\x1e'
                | '\u{85}'
                | '\u{2028}'
                | '\u{2029}'
        );
        if is_break {
            lines.push(&s[start..i]);
            let mut end = i + c.len_utf8();
            if c == '\r' && chars.peek().is_some_and(|&(_, n)| n == '\n') {
                chars.next();
                end += 1;
            }
            start = end;
        }
    }
    if start < s.len() {
        lines.push(&s[start..]);
    }
    lines
}

/// Jinja2's `indent(width=4, first=False, blank=False)`, trailing newline kept as Python keeps
/// it; `width` may be a number of spaces or the indentation text.
fn indent(
    value: String,
    width: Option<Value>,
    first: Option<bool>,
    blank: Option<bool>,
    kwargs: minijinja::value::Kwargs,
) -> std::result::Result<String, minijinja::Error> {
    let width = match width {
        Some(w) => Some(w),
        None => kwargs.get::<Option<Value>>("width")?,
    };
    let first = first
        .or(kwargs.get::<Option<bool>>("first")?)
        .unwrap_or(false);
    let blank = blank
        .or(kwargs.get::<Option<bool>>("blank")?)
        .unwrap_or(false);
    kwargs.assert_all_used()?;
    let indention = match &width {
        None => "    ".to_string(),
        Some(w) => match w.as_str() {
            Some(text) => text.to_string(),
            None => {
                let n = i64::try_from(w.clone()).map_err(|_| {
                    minijinja::Error::new(
                        ErrorKind::InvalidOperation,
                        format!("indent width must be a number or text, found {w}"),
                    )
                })?;
                if n > MAX_INDENT as i64 {
                    return Err(minijinja::Error::new(
                        ErrorKind::InvalidOperation,
                        format!("indent width above {MAX_INDENT}"),
                    ));
                }
                " ".repeat(n.max(0) as usize)
            }
        },
    };
    let text = value + "\n";
    let lines = split_lines(&text);
    let newline = "\n";
    let mut rv = if blank {
        lines.join(&format!("{newline}{indention}"))
    } else {
        let mut it = lines.into_iter();
        let mut rv = it.next().unwrap_or_default().to_string();
        let rest: Vec<String> = it
            .map(|l| {
                if l.is_empty() {
                    String::new()
                } else {
                    format!("{indention}{l}")
                }
            })
            .collect();
        if !rest.is_empty() {
            rv.push_str(newline);
            rv.push_str(&rest.join(newline));
        }
        rv
    };
    if first {
        rv.insert_str(0, &indention);
    }
    Ok(rv)
}

/// Python's `json.dumps` as transformers' `tojson` filter calls it: `", "` / `": "` separators
/// (`","` / `": "` with `indent`), insertion order kept, `ensure_ascii` off unless asked for.
fn tojson(
    value: Value,
    kwargs: minijinja::value::Kwargs,
) -> std::result::Result<Value, minijinja::Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let separators: Option<Vec<String>> = kwargs.get("separators")?;
    kwargs.assert_all_used()?;
    let invalid = |what: String| minijinja::Error::new(ErrorKind::InvalidOperation, what);
    if indent.is_some_and(|n| n > MAX_INDENT) {
        return Err(invalid(format!("tojson indent above {MAX_INDENT}")));
    }
    // Python's defaults: (", ", ": "), or (",", ": ") with an indent.
    let seps = match separators.as_deref() {
        None => (if indent.is_some() { "," } else { ", " }, ": "),
        Some([item, key]) => (item.as_str(), key.as_str()),
        Some(other) => {
            return Err(invalid(format!(
                "tojson separators must be (item, key), found {other:?}"
            )));
        }
    };
    let json = serde_json::to_value(&value)
        .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))?;
    let mut out = String::new();
    let style = JsonStyle {
        indent,
        sort: sort_keys.unwrap_or(false),
        item_sep: seps.0,
        key_sep: seps.1,
    };
    dump(&json, &style, 0, &mut out);
    if ensure_ascii.unwrap_or(false) {
        out = out
            .chars()
            .flat_map(|c| {
                if c.is_ascii() {
                    vec![c.to_string()]
                } else {
                    let mut buf = [0u16; 2];
                    c.encode_utf16(&mut buf)
                        .iter()
                        .map(|u| format!("\\u{u:04x}"))
                        .collect()
                }
            })
            .collect();
    }
    Ok(Value::from_safe_string(out))
}

/// How Python's `json.dumps` was asked to lay out its output.
struct JsonStyle<'a> {
    indent: Option<usize>,
    sort: bool,
    item_sep: &'a str,
    key_sep: &'a str,
}

/// Widest indentation `indent` and `tojson` accept (a template asking for more is broken).
const MAX_INDENT: usize = 256;

fn dump(v: &serde_json::Value, style: &JsonStyle<'_>, depth: usize, out: &mut String) {
    use serde_json::Value as J;
    let newline = |out: &mut String, depth: usize| {
        if let Some(n) = style.indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * depth));
        }
    };
    match v {
        J::Array(items) if !items.is_empty() => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(style.item_sep);
                }
                newline(out, depth + 1);
                dump(item, style, depth + 1, out);
            }
            newline(out, depth);
            out.push(']');
        }
        J::Object(map) if !map.is_empty() => {
            out.push('{');
            let mut entries: Vec<(&String, &J)> = map.iter().collect();
            if style.sort {
                entries.sort_by(|a, b| a.0.cmp(b.0));
            }
            for (i, (k, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(style.item_sep);
                }
                newline(out, depth + 1);
                out.push_str(&J::String(k.clone()).to_string());
                out.push_str(style.key_sep);
                dump(item, style, depth + 1, out);
            }
            newline(out, depth);
            out.push('}');
        }
        J::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(0.0);
            // Python prints floats with a decimal point (1.0, not 1).
            out.push_str(&if f.fract() == 0.0 && f.abs() < 1e16 {
                format!("{f:.1}")
            } else {
                n.to_string()
            });
        }
        other => out.push_str(&other.to_string()),
    }
}

fn describe(e: &minijinja::Error) -> String {
    match (e.line(), e.detail()) {
        (Some(line), Some(d)) => format!("{} (line {line}: {d})", e.kind()),
        (Some(line), None) => format!("{} (line {line})", e),
        _ => e.to_string(),
    }
}

/// The current UTC date and time formatted with the strftime subset templates use.
fn strftime_now(fmt: &str) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format_time(secs, fmt)
}

/// strftime for `%Y %m %d %B %b %H %M %S %A %a %%` on a UNIX timestamp (UTC).
pub fn format_time(secs: u64, fmt: &str) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
        "Monday",
        "Tuesday",
        "Wednesday",
    ];
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out += &year.to_string(),
            Some('m') => out += &format!("{month:02}"),
            Some('d') => out += &format!("{day:02}"),
            Some('B') => out += MONTHS[(month - 1) as usize],
            Some('b') => out += &MONTHS[(month - 1) as usize][..3],
            Some('H') => out += &format!("{:02}", rem / 3600),
            Some('M') => out += &format!("{:02}", rem % 3600 / 60),
            Some('S') => out += &format!("{:02}", rem % 60),
            Some('A') => out += DAYS[(days % 7) as usize],
            Some('a') => out += &DAYS[(days % 7) as usize][..3],
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expected values rendered by Python's jinja2 3.1 (generation tags as transformers renders
    /// them: their body).
    #[test]
    fn indent_and_iterable_follow_jinja2() {
        let cases = [
            (r#"{{ "{\n"|indent(4, first=true) }}"#, "    {\n"),
            (r#"{{ "a\nb"|indent(2) }}"#, "a\n  b"),
            (r#"{{ "a\n\nb"|indent(2) }}"#, "a\n\n  b"),
            (
                r#"{{ "a\n\nb\n"|indent(2, blank=true) }}"#,
                "a\n  \n  b\n  ",
            ),
            (r#"{{ "x\r\ny"|indent("--") }}"#, "x\n--y"),
            (
                "{{ none is iterable }}{{ 's' is iterable }}{{ 3 is iterable }}{{ nothing is iterable }}",
                "FalseTrueFalseTrue",
            ),
            (
                r#"{{ {"a": [1, 2]}|tojson(separators=(",", ":")) }}"#,
                r#"{"a":[1,2]}"#,
            ),
            (
                "a{%- generation -%}  b  {%-endgeneration%}c{%   generation   %}d{% endgeneration %}",
                "abcd",
            ),
        ];
        for (src, want) in cases {
            let t = ChatTemplate::new(src, "test").unwrap();
            assert_eq!(t.render(&[], None, false, "", "").unwrap(), want, "{src}");
        }
        // Absurd widths are errors, not allocations.
        for src in [
            "{{ 'a\nb'|indent(100000) }}",
            "{{ [1]|tojson(indent=100000) }}",
        ] {
            let t = ChatTemplate::new(src, "test").unwrap();
            assert!(t.render(&[], None, false, "", "").is_err(), "{src}");
        }
    }

    #[test]
    fn formats_dates() {
        // 2024-07-26 13:25:09 UTC, a Friday.
        assert_eq!(
            format_time(1_722_000_309, "%d %b %Y %H:%M:%S %A"),
            "26 Jul 2024 13:25:09 Friday"
        );
        assert_eq!(format_time(0, "%Y-%m-%d %a"), "1970-01-01 Thu");
    }

    #[test]
    fn raise_exception_is_a_clear_error() {
        let t = ChatTemplate::new("{{ raise_exception('roles must alternate') }}", "test").unwrap();
        let e = t.render(&[], None, true, "", "").unwrap_err().to_string();
        assert!(e.contains("roles must alternate"), "{e}");
    }

    #[test]
    fn broken_templates_fail_at_load_with_the_line() {
        let e = ChatTemplate::new("{% for m in messages %}\n{{ m.content }", "test")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("chat template of test") && e.contains("line"),
            "{e}"
        );
    }
}
