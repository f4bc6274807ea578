//! Tool calls: which convention a model's chat template uses, parsing calls out of generated
//! text (whole or as it streams), and a grammar that forces a call when the client requires one.
//!
//! Conventions: Hermes-style `<tool_call>{"name", "arguments"}</tool_call>` (Qwen 2.5/3 and
//! others), Llama 3.1+ JSON `{"name", "parameters"}`, Mistral `[TOOL_CALLS] [{"name",
//! "arguments"}]` (the marker is a control token, so the text starts at the list).

use serde_json::Value;

use crate::constrain::OutputFormat;

/// How a model writes tool calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolFormat {
    Hermes,
    Llama3Json,
    Mistral,
}

const HERMES_OPEN: &str = "<tool_call>";
const HERMES_CLOSE: &str = "</tool_call>";

impl ToolFormat {
    /// The convention a chat template teaches, if it renders tools at all.
    pub fn from_template(src: &str) -> Option<Self> {
        if !src.contains("tools") {
            return None;
        }
        if src.contains(HERMES_OPEN) {
            Some(ToolFormat::Hermes)
        } else if src.contains("[TOOL_CALLS]") {
            Some(ToolFormat::Mistral)
        } else if src.contains("<|python_tag|>") || src.contains("ipython") {
            Some(ToolFormat::Llama3Json)
        } else {
            None
        }
    }

    /// The key that holds a call's arguments.
    fn arguments_key(self) -> &'static str {
        match self {
            ToolFormat::Llama3Json => "parameters",
            ToolFormat::Hermes | ToolFormat::Mistral => "arguments",
        }
    }

    /// A grammar that makes the model call one of `tools` (OpenAI tool objects), or the one
    /// named `only`.
    pub fn forcing_grammar(self, tools: &[Value], only: Option<&str>) -> Option<OutputFormat> {
        let key = self.arguments_key();
        let calls: Vec<Value> = tools
            .iter()
            .filter_map(|t| t.get("function"))
            .filter(|f| only.is_none_or(|n| f.get("name").and_then(Value::as_str) == Some(n)))
            .map(|f| {
                let params = f
                    .get("parameters")
                    .cloned()
                    .unwrap_or_else(|| serde_json::json!({"type": "object"}));
                serde_json::json!({
                    "type": "object",
                    "properties": {"name": {"const": f.get("name")}, key: params},
                    "required": ["name", key],
                    "additionalProperties": false
                })
            })
            .collect();
        if calls.is_empty() {
            return None;
        }
        let call = serde_json::json!({
            "anyOf": calls,
            "x-guidance": {"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "}
        });
        let call = serde_json::to_string(&call).ok()?;
        let lark = match self {
            ToolFormat::Hermes => {
                format!(
                    "start: \"{HERMES_OPEN}\\n\" call \"\\n{HERMES_CLOSE}\"\ncall: %json {call}\n"
                )
            }
            ToolFormat::Llama3Json => format!("start: call\ncall: %json {call}\n"),
            ToolFormat::Mistral => format!("start: \"[\" call \"]\"\ncall: %json {call}\n"),
        };
        Some(OutputFormat::Lark(lark))
    }
}

/// A call the model made.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub name: String,
    /// The arguments as JSON text.
    pub arguments: String,
}

fn call_from(v: &Value, key: &str) -> Option<ToolCall> {
    let name = v.get("name")?.as_str()?.to_string();
    let args = v
        .get(key)
        .or_else(|| v.get("arguments"))
        .or_else(|| v.get("parameters"));
    let arguments = match args {
        None => "{}".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(a) => serde_json::to_string(a).ok()?,
    };
    Some(ToolCall { name, arguments })
}

/// Splits generated `text` into plain content and tool calls. Text that looks like a call but
/// does not parse stays content.
pub fn parse(format: ToolFormat, text: &str) -> (String, Vec<ToolCall>) {
    match format {
        ToolFormat::Hermes => {
            let mut content = String::new();
            let mut calls = Vec::new();
            let mut rest = text;
            while let Some(start) = rest.find(HERMES_OPEN) {
                let body_start = start + HERMES_OPEN.len();
                let (body, next) = match rest[body_start..].find(HERMES_CLOSE) {
                    Some(end) => (
                        &rest[body_start..body_start + end],
                        &rest[body_start + end + HERMES_CLOSE.len()..],
                    ),
                    None => (&rest[body_start..], ""),
                };
                match serde_json::from_str::<Value>(body.trim())
                    .ok()
                    .and_then(|v| call_from(&v, "arguments"))
                {
                    Some(c) => {
                        content += &rest[..start];
                        calls.push(c);
                    }
                    None => content += &rest[..body_start + body.len()],
                }
                rest = next;
            }
            content += rest;
            (content.trim().to_string(), calls)
        }
        ToolFormat::Llama3Json | ToolFormat::Mistral => {
            let t = text.trim();
            let key = format.arguments_key();
            let parsed = serde_json::from_str::<Value>(t).ok().and_then(|v| match v {
                Value::Array(items) => items.iter().map(|i| call_from(i, key)).collect(),
                obj @ Value::Object(_) => call_from(&obj, key).map(|c| vec![c]),
                _ => None,
            });
            match parsed {
                Some(calls) if !calls.is_empty() => (String::new(), calls),
                _ => (text.to_string(), Vec::new()),
            }
        }
    }
}

/// Streams content while holding back whatever may be a tool call, so calls never leak out as
/// text; [`ToolStream::finish`] parses the held text.
#[derive(Debug)]
pub struct ToolStream {
    format: ToolFormat,
    text: String,
    /// Bytes of `text` released as content.
    released: usize,
    /// A call has started: release nothing more.
    holding: bool,
}

impl ToolStream {
    pub fn new(format: ToolFormat) -> Self {
        ToolStream {
            format,
            text: String::new(),
            released: 0,
            holding: false,
        }
    }

    /// Adds generated text; returns the content that can be shown now.
    pub fn push(&mut self, piece: &str) -> String {
        self.text += piece;
        if self.holding {
            return String::new();
        }
        let safe = match self.format {
            ToolFormat::Hermes => match self.text.find(HERMES_OPEN) {
                Some(p) => {
                    self.holding = true;
                    p
                }
                None => {
                    // Hold a tail that may be the start of the marker.
                    let mut safe = self.text.len();
                    for k in (1..HERMES_OPEN.len()).rev() {
                        if self.text.ends_with(&HERMES_OPEN[..k]) {
                            safe -= k;
                            break;
                        }
                    }
                    safe
                }
            },
            ToolFormat::Llama3Json | ToolFormat::Mistral => {
                let t = self.text.trim_start();
                if t.is_empty() {
                    0
                } else if t.starts_with('{') || t.starts_with('[') {
                    self.holding = true;
                    0
                } else {
                    self.text.len()
                }
            }
        };
        let safe = safe.max(self.released);
        let out = self.text[self.released..safe].to_string();
        self.released = safe;
        out
    }

    /// The end: the content not yet shown and the calls.
    pub fn finish(self) -> (String, Vec<ToolCall>) {
        let rest = &self.text[self.released..];
        let (content, calls) = parse(self.format, rest);
        if calls.is_empty() {
            // Nothing parsed: everything held back was content after all.
            (rest.to_string(), calls)
        } else {
            (content, calls)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code fails loudly")]
mod tests {
    use super::*;

    #[test]
    fn hermes_calls_parse_and_leave_content() {
        let text = "Let me check.\n<tool_call>\n{\"name\": \"weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"time\", \"arguments\": {}}\n</tool_call>";
        let (content, calls) = parse(ToolFormat::Hermes, text);
        assert_eq!(content, "Let me check.");
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].name, "weather");
        assert_eq!(calls[0].arguments, r#"{"city":"Paris"}"#);
        assert_eq!(calls[1].arguments, "{}");
        // A broken call stays text.
        let (content, calls) = parse(ToolFormat::Hermes, "<tool_call>{oops</tool_call>");
        assert!(calls.is_empty());
        assert_eq!(content, "<tool_call>{oops");
    }

    #[test]
    fn json_conventions_parse() {
        let (c, calls) = parse(
            ToolFormat::Llama3Json,
            r#" {"name": "f", "parameters": {"x": 1}}"#,
        );
        assert_eq!(
            (c.as_str(), calls[0].arguments.as_str()),
            ("", r#"{"x":1}"#)
        );
        let (_, calls) = parse(
            ToolFormat::Mistral,
            r#"[{"name": "a", "arguments": {}}, {"name": "b", "arguments": {"y": "z"}}]"#,
        );
        assert_eq!(calls.len(), 2);
        let (c, calls) = parse(ToolFormat::Llama3Json, "Paris is sunny.");
        assert!(calls.is_empty());
        assert_eq!(c, "Paris is sunny.");
    }

    #[test]
    fn streams_hold_back_calls_at_every_split() {
        let text = "Sure. <tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": 1}}\n</tool_call>";
        for split in 0..=text.len() {
            if !text.is_char_boundary(split) {
                continue;
            }
            let mut s = ToolStream::new(ToolFormat::Hermes);
            let mut shown = s.push(&text[..split]);
            shown += &s.push(&text[split..]);
            assert!(!shown.contains('<'), "split {split}: {shown}");
            let (rest, calls) = s.finish();
            assert_eq!(format!("{shown}{rest}").trim(), "Sure.", "split {split}");
            assert_eq!(calls.len(), 1, "split {split}");
        }
        let mut s = ToolStream::new(ToolFormat::Hermes);
        assert_eq!(s.push("Just text <b>"), "Just text <b>");
        let (rest, calls) = s.finish();
        assert_eq!((rest.as_str(), calls.len()), ("", 0));
    }

    #[test]
    fn templates_name_their_convention() {
        assert_eq!(
            ToolFormat::from_template("{% if tools %}<tool_call>{% endif %}"),
            Some(ToolFormat::Hermes)
        );
        assert_eq!(
            ToolFormat::from_template("{% if tools %}<|python_tag|>{% endif %}"),
            Some(ToolFormat::Llama3Json)
        );
        assert_eq!(ToolFormat::from_template("{{ messages }}"), None);
    }

    #[test]
    fn forcing_grammars_name_the_tools() {
        let tools = vec![serde_json::json!({"type": "function", "function": {
            "name": "weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}})];
        let Some(OutputFormat::Lark(g)) = ToolFormat::Hermes.forcing_grammar(&tools, None) else {
            panic!("no grammar");
        };
        assert!(g.starts_with("start: \"<tool_call>\\n\" call"), "{g}");
        assert!(g.contains(r#""const":"weather""#), "{g}");
        assert!(
            ToolFormat::Hermes
                .forcing_grammar(&tools, Some("other"))
                .is_none()
        );
    }
}
