//! Tool calling for the chat routes: which tools reach the template, whether a call is forced
//! (by a grammar, so it is well-formed), and the calls parsed back out of the answer.

use forja_api::openai::{FunctionCall, ToolCall};
use forja_engine::LoadedModel;
use forja_engine::constrain::OutputFormat;
use forja_engine::tool_calls::{self, ToolFormat};
use serde_json::Value;

use crate::error::ApiError;

/// Tools a request offers the model.
#[derive(Debug, Clone)]
pub struct ToolPlan {
    pub format: ToolFormat,
    /// The tools as the template renders them.
    pub tools: Value,
    /// A grammar that forces a call (`tool_choice` "required" or a named function).
    pub forced: Option<OutputFormat>,
}

/// Validates `tools` and `tool_choice`. `None` when no tool may be called.
pub fn plan(
    model: &LoadedModel,
    tools: Option<&Value>,
    choice: Option<&Value>,
) -> Result<Option<ToolPlan>, ApiError> {
    let list = match tools {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(a)) if a.is_empty() => return Ok(None),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(ApiError::param("tools", "tools must be a list")),
    };
    for (i, t) in list.iter().enumerate() {
        let name = t
            .get("function")
            .and_then(|f| f.get("name"))
            .and_then(Value::as_str);
        if name.is_none_or(str::is_empty) {
            return Err(ApiError::param(
                "tools",
                format!("tools[{i}] needs function.name"),
            ));
        }
    }
    let only = match choice {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s == "auto" => None,
        Some(Value::String(s)) if s == "none" => return Ok(None),
        Some(Value::String(s)) if s == "required" => Some(None),
        Some(v) => match v
            .get("function")
            .and_then(|f| f.get("name"))
            .and_then(Value::as_str)
        {
            Some(n) => Some(Some(n.to_string())),
            None => {
                return Err(ApiError::param(
                    "tool_choice",
                    "tool_choice must be auto, none, required or {\"type\": \"function\", \
                     \"function\": {\"name\": …}}",
                ));
            }
        },
    };
    let format = model
        .tokenizer
        .chat_template
        .as_deref()
        .and_then(ToolFormat::from_template)
        .ok_or_else(|| {
            ApiError::param(
                "tools",
                format!("{}'s chat template does not support tools", model.name),
            )
        })?;
    let forced = match &only {
        None => None,
        Some(name) => Some(
            format
                .forcing_grammar(list, name.as_deref())
                .ok_or_else(|| {
                    ApiError::param(
                        "tool_choice",
                        format!("no tool named `{}`", name.as_deref().unwrap_or("")),
                    )
                })?,
        ),
    };
    Ok(Some(ToolPlan {
        format,
        tools: Value::Array(list.clone()),
        forced,
    }))
}

/// API tool calls with fresh ids.
pub fn api_calls(calls: Vec<tool_calls::ToolCall>, indexed: bool) -> Vec<ToolCall> {
    calls
        .into_iter()
        .enumerate()
        .map(|(i, c)| ToolCall {
            index: indexed.then_some(i),
            id: format!("call_{:016x}", crate::jobs_id()),
            kind: "function",
            function: FunctionCall {
                name: c.name,
                arguments: c.arguments,
            },
        })
        .collect()
}

/// Assistant tool calls as templates expect them: arguments as objects, not JSON text.
pub fn template_calls(calls: &Value) -> Value {
    let mut calls = calls.clone();
    if let Some(list) = calls.as_array_mut() {
        for c in list {
            if let Some(args) = c.pointer_mut("/function/arguments")
                && let Some(parsed) = args
                    .as_str()
                    .and_then(|s| serde_json::from_str::<Value>(s).ok())
            {
                *args = parsed;
            }
        }
    }
    calls
}
