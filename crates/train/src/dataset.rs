//! Training data files: conversations in chat format (`{"messages": [{"role", "content"}, …]}`)
//! or instructions in alpaca format (`{"instruction", "input", "output"}`, optional `system`),
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
            let messages = record_messages(v).map_err(|what| err(at.clone(), what))?;
            records.push(Record { at, messages });
        }
    } else {
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let at = format!("line {}", i + 1);
            let v: Value = serde_json::from_str(line)
                .map_err(|e| err(at.clone(), format!("not valid JSON: {e}")))?;
            let messages = record_messages(&v).map_err(|what| err(at.clone(), what))?;
            records.push(Record { at, messages });
        }
    }
    if records.is_empty() {
        return Err(err("the whole file".into(), "no records".into()));
    }
    Ok(records)
}

/// The conversation of one record, or what is wrong with it.
fn record_messages(v: &Value) -> std::result::Result<Vec<Message>, String> {
    let Value::Object(o) = v else {
        return Err(format!("expected a JSON object, found {}", kind(v)));
    };
    let messages = if let Some(m) = o.get("messages") {
        if o.contains_key("instruction") {
            return Err(
                "has both `messages` (chat format) and `instruction` (alpaca format)".into(),
            );
        }
        chat_messages(m)?
    } else if o.contains_key("instruction") || o.contains_key("output") {
        alpaca_messages(o)?
    } else {
        return Err(
            "neither `messages` (chat format) nor `instruction` + `output` (alpaca format)".into(),
        );
    };
    check_turns(&messages)?;
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
