//! Training data files: conversations in chat format (`{"messages": [{"role", "content"}, …]}`),
//! instructions in alpaca format (`{"instruction", "input", "output"}`, optional `system`), or
//! ShareGPT conversations (`{"conversations": [{"from", "value"}, …]}`, with `function_call` and
//! `observation` turns), each optionally with the `tools` offered, or plain text (`{"text"}`:
//! learned as written, every token — for base models without a chat template, or documents);
//! as JSON Lines (one record a line) or one JSON array. Every record is checked before any
//! training starts; a bad one is reported by its line (JSONL) or position (JSON array).

use std::path::Path;

use forja_engine::Message;
use serde_json::{Map, Value};

use crate::error::{Result, TrainError};

/// One usable record: where it came from and the conversation it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// "line 12" or "record 3", for messages about it.
    pub at: String,
    pub messages: Vec<Message>,
    /// Tool definitions the conversation was held with (given to the chat template).
    pub tools: Option<Value>,
    /// A `text` record's text, learned as written (every token); `messages` is then empty.
    pub text: Option<String>,
}

const ROLES: [&str; 4] = ["system", "user", "assistant", "tool"];

/// Reads and validates every record of `path`.
pub fn read(path: &Path) -> Result<Vec<Record>> {
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
    parse(&text, path)
}

/// [`read`] on text already loaded; `path` names it in errors.
pub fn parse(text: &str, path: &Path) -> Result<Vec<Record>> {
    let err = |at: String, what: String| TrainError::Dataset {
        path: path.to_path_buf(),
        at,
        what,
    };
    let mut records = Vec::new();
    if text.trim_start().starts_with('[') {
        let values: Vec<Value> = serde_json::from_str(text).map_err(|e| {
            err(
                format!("line {}, column {}", e.line(), e.column()),
                format!("not valid JSON: {e}"),
            )
        })?;
        for (i, v) in values.iter().enumerate() {
            let at = format!("record {}", i + 1);
            records.push(record(at, v).map_err(|(at, what)| err(at, what))?);
        }
    } else {
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let at = format!("line {}", i + 1);
            let v: Value = serde_json::from_str(line)
                .map_err(|e| err(at.clone(), format!("not valid JSON: {e}")))?;
            records.push(record(at, &v).map_err(|(at, what)| err(at, what))?);
        }
    }
    if records.is_empty() {
        return Err(err("the whole file".into(), "no records".into()));
    }
    Ok(records)
}

/// One record, or where and what is wrong with it.
fn record(at: String, v: &Value) -> std::result::Result<Record, (String, String)> {
    if let Value::Object(o) = v
        && let Some(t) = o.get("text")
    {
        let other: Vec<&str> = ["messages", "conversations", "instruction", "output"]
            .into_iter()
            .filter(|k| o.contains_key(*k))
            .collect();
        let text = match t {
            _ if !other.is_empty() => {
                Err(format!("mixes formats: has both `text` and `{}`", other[0]))
            }
            Value::String(s) if s.trim().is_empty() => Err("`text` is empty".to_string()),
            Value::String(s) => Ok(s.clone()),
            v => Err(format!("`text` must be a string, found {}", kind(v))),
        };
        return match text {
            Ok(text) => Ok(Record {
                at,
                messages: Vec::new(),
                tools: None,
                text: Some(text),
            }),
            Err(what) => Err((at, what)),
        };
    }
    match record_messages(v) {
        Ok((messages, tools)) => Ok(Record {
            at,
            messages,
            tools,
            text: None,
        }),
        Err(what) => Err((at, what)),
    }
}

/// The conversation of one record and its tools, or what is wrong with it.
fn record_messages(v: &Value) -> std::result::Result<(Vec<Message>, Option<Value>), String> {
    let Value::Object(o) = v else {
        return Err(format!("expected a JSON object, found {}", kind(v)));
    };
    let formats = ["messages", "conversations", "instruction"]
        .into_iter()
        .filter(|k| o.contains_key(*k))
        .collect::<Vec<_>>();
    if formats.len() > 1 {
        return Err(format!(
            "mixes formats: has both `{}` and `{}`",
            formats[0], formats[1]
        ));
    }
    let messages = if let Some(m) = o.get("messages") {
        chat_messages(m)?
    } else if let Some(c) = o.get("conversations") {
        sharegpt_messages(c, o)?
    } else if o.contains_key("instruction") || o.contains_key("output") {
        alpaca_messages(o)?
    } else {
        return Err(
            "neither `messages` (chat format), `conversations` (ShareGPT), \
             `instruction` + `output` (alpaca format) nor `text` (plain text)"
                .into(),
        );
    };
    check_turns(&messages)?;
    Ok((messages, tools(o)?))
}

/// `tools`: a JSON array, or a string holding one (as ShareGPT files store it).
fn tools(o: &Map<String, Value>) -> std::result::Result<Option<Value>, String> {
    let parsed = match o.get("tools") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => return Ok(None),
        Some(Value::String(s)) => serde_json::from_str::<Value>(s)
            .map_err(|e| format!("`tools` is a string but not JSON: {e}"))?,
        Some(v) => v.clone(),
    };
    match parsed {
        Value::Array(a) if a.is_empty() => Ok(None),
        Value::Array(a) => Ok(Some(Value::Array(a))),
        other => Err(format!("`tools` must be an array, found {}", kind(&other))),
    }
}

/// ShareGPT turns: `human`, `gpt`, `system`, `function_call` (an assistant tool call, its
/// value the JSON `{"name", "arguments"}`) and `observation` (the tool's result).
fn sharegpt_messages(
    v: &Value,
    o: &Map<String, Value>,
) -> std::result::Result<Vec<Message>, String> {
    let Value::Array(list) = v else {
        return Err(format!(
            "`conversations` must be an array, found {}",
            kind(v)
        ));
    };
    let mut messages = Vec::with_capacity(list.len() + 1);
    if let Some(Value::String(system)) = o.get("system")
        && !system.is_empty()
    {
        messages.push(Message::new("system", system));
    }
    for (i, turn) in list.iter().enumerate() {
        let at = |e: String| format!("turn {}: {e}", i + 1);
        let (Some(Value::String(from)), Some(Value::String(value))) =
            (turn.get("from"), turn.get("value"))
        else {
            return Err(at("needs string `from` and `value`".into()));
        };
        let message = match from.as_str() {
            "human" | "user" => Message::new("user", value),
            "gpt" | "assistant" => Message::new("assistant", value),
            "system" => Message::new("system", value),
            "observation" | "tool" => Message::new("tool", value),
            "function_call" => {
                let call: Value = serde_json::from_str(value)
                    .map_err(|e| at(format!("the function call is not JSON: {e}")))?;
                if call.get("name").and_then(Value::as_str).is_none() {
                    return Err(at("the function call has no `name`".into()));
                }
                let mut m = Message::new("assistant", "");
                m.tool_calls = Some(serde_json::json!([{ "type": "function", "function": call }]));
                m
            }
            other => return Err(at(format!("unknown speaker {other:?}"))),
        };
        messages.push(message);
    }
    Ok(messages)
}

fn chat_messages(v: &Value) -> std::result::Result<Vec<Message>, String> {
    let Value::Array(list) = v else {
        return Err(format!("`messages` must be an array, found {}", kind(v)));
    };
    list.iter()
        .enumerate()
        .map(|(i, m)| chat_message(m).map_err(|e| format!("message {}: {e}", i + 1)))
        .collect()
}

fn chat_message(v: &Value) -> std::result::Result<Message, String> {
    let Value::Object(o) = v else {
        return Err(format!("expected an object, found {}", kind(v)));
    };
    let role = match o.get("role") {
        Some(Value::String(r)) if ROLES.contains(&r.as_str()) => r.clone(),
        Some(Value::String(r)) => {
            return Err(format!("role {r:?} is not one of {}", ROLES.join(", ")));
        }
        Some(other) => return Err(format!("`role` must be a string, found {}", kind(other))),
        None => return Err("no `role`".into()),
    };
    let tool_calls = o.get("tool_calls").filter(|t| !t.is_null()).cloned();
    let content = match o.get("content") {
        Some(Value::String(c)) => c.clone(),
        Some(Value::Null) | None if tool_calls.is_some() => String::new(),
        Some(other) => {
            return Err(format!("`content` must be a string, found {}", kind(other)));
        }
        None => return Err("no `content`".into()),
    };
    let text_field = |name: &str| -> std::result::Result<Option<String>, String> {
        match o.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(format!("`{name}` must be a string, found {}", kind(other))),
        }
    };
    Ok(Message {
        role,
        content,
        tool_calls,
        name: text_field("name")?,
        tool_call_id: text_field("tool_call_id")?,
    })
}

fn alpaca_messages(o: &Map<String, Value>) -> std::result::Result<Vec<Message>, String> {
    let field = |name: &str, required: bool| -> std::result::Result<String, String> {
        match o.get(name) {
            Some(Value::String(s)) => Ok(s.clone()),
            None | Some(Value::Null) if !required => Ok(String::new()),
            None => Err(format!("no `{name}`")),
            Some(other) => Err(format!("`{name}` must be a string, found {}", kind(other))),
        }
    };
    let instruction = field("instruction", true)?;
    let input = field("input", false)?;
    let output = field("output", true)?;
    let system = field("system", false)?;
    if instruction.trim().is_empty() {
        return Err("`instruction` is empty".into());
    }
    let prompt = if input.trim().is_empty() {
        instruction
    } else {
        format!("{instruction}\n\n{input}")
    };
    let mut messages = Vec::with_capacity(3);
    if !system.is_empty() {
        messages.push(Message::new("system", &system));
    }
    messages.push(Message::new("user", &prompt));
    messages.push(Message::new("assistant", &output));
    Ok(messages)
}

/// A conversation a model can be taught from: it opens (after system messages) with the user,
/// and has at least one assistant message with something in it.
fn check_turns(messages: &[Message]) -> std::result::Result<(), String> {
    match messages.iter().find(|m| m.role != "system") {
        None => return Err("no user or assistant message".into()),
        Some(m) if m.role != "user" => {
            return Err(format!(
                "the first message after the system prompt is from {:?}; conversations start \
                 with the user",
                m.role
            ));
        }
        Some(_) => {}
    }
    if let Some(i) = messages
        .iter()
        .position(|m| m.role == "system" && !is_first(messages, m))
    {
        return Err(format!(
            "message {}: a system message after the conversation began",
            i + 1
        ));
    }
    let learnable = messages
        .iter()
        .any(|m| m.role == "assistant" && (!m.content.trim().is_empty() || m.tool_calls.is_some()));
    if !learnable {
        return Err("no assistant message with content to learn from".into());
    }
    Ok(())
}

fn is_first(messages: &[Message], m: &Message) -> bool {
    messages.first().is_some_and(|f| std::ptr::eq(f, m))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
