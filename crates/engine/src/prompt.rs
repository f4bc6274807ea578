//! Conversation → prompt ids: the model's chat template renders the messages, and only the
//! template's own markup may become control tokens. Control-token text anywhere in a message
//! (content, name, tool calls) or in the tools list — a user typing `<|im_end|>` — is encoded
//! as text, so no message can forge a turn.

use aho_corasick::{AhoCorasick, MatchKind};

use crate::chat_template::{ChatTemplate, Message};
use crate::error::{EngineError, Result};
use crate::tokenizer::{Part, Tokenizer};

/// Finds control-token text (leftmost, longest) in message content.
#[derive(Debug)]
pub struct ControlText {
    matcher: Option<AhoCorasick>,
}

impl ControlText {
    pub fn new(tokenizer: &Tokenizer) -> Result<Self> {
        let texts = tokenizer.control_texts();
        let matcher = if texts.is_empty() {
            None
        } else {
            Some(
                AhoCorasick::builder()
                    .match_kind(MatchKind::LeftmostLongest)
                    .build(&texts)
                    .map_err(|e| EngineError::Input(format!("control-token matcher: {e}")))?,
            )
        };
        Ok(ControlText { matcher })
    }
}

/// Prompt ids for `messages` (and `tools`, when the template takes them) through `template`, or
/// for a model without one, the messages' text joined as a plain completion prompt.
pub fn chat_prompt(
    tokenizer: &Tokenizer,
    template: Option<&ChatTemplate>,
    controls: &ControlText,
    messages: &[Message],
    tools: Option<&serde_json::Value>,
) -> Result<Vec<u32>> {
    let Some(template) = template else {
        let text = messages
            .iter()
            .map(|m| m.content.as_str())
            .collect::<Vec<_>>()
            .join("\n");
        return completion_prompt(tokenizer, &text);
    };
    let mut guard = ContentGuard::new(controls);
    let guarded = guard.protect_messages(messages);
    let tools = tools.map(|t| guard.protect_json(t));
    let bos = &tokenizer.special.bos_text;
    let text = template.render(
        &guarded,
        tools.as_ref(),
        true,
        bos,
        &tokenizer.special.eos_text,
    )?;
    let parts = guard.split(&text);
    // Templates write BOS themselves when the model wants it.
    let starts_with_bos = !bos.is_empty() && text.starts_with(bos.as_str());
    tokenizer.encode_parts(&parts, !starts_with_bos)
}

/// A conversation encoded for training: its ids and, per id, whether the model learns to
/// produce it.
#[derive(Debug, Clone, PartialEq)]
pub struct LabeledIds {
    pub ids: Vec<u32>,
    /// Same length as `ids`: true on the assistant turns' tokens (their end-of-turn markup
    /// included), false on everything the model is given.
    pub trained: Vec<bool>,
}

/// Ids of a whole conversation through `template`, with the assistant turns marked. Each
/// assistant turn is located by rendering the conversation up to it with the generation prompt
/// (exactly what the model is given at inference) and through it; the prompt part and the turn
/// are encoded separately, so the turn starts on the same token boundary as a generation does.
/// Control-token text inside messages and tools stays text, as in [`chat_prompt`].
pub fn chat_training_ids(
    tokenizer: &Tokenizer,
    template: &ChatTemplate,
    controls: &ControlText,
    messages: &[Message],
    tools: Option<&serde_json::Value>,
) -> Result<LabeledIds> {
    let mut guard = ContentGuard::new(controls);
    let guarded = guard.protect_messages(messages);
    let tools = tools.map(|t| guard.protect_json(t));
    let bos = &tokenizer.special.bos_text;
    let eos = &tokenizer.special.eos_text;
    let render = |m: &[Message], generation_prompt: bool| {
        template.render(m, tools.as_ref(), generation_prompt, bos, eos)
    };
    let full = render(&guarded, false)?;
    let mut spans = Vec::new();
    for (i, m) in guarded.iter().enumerate() {
        if m.role != "assistant" {
            continue;
        }
        let prompt = render(&guarded[..i], true)?;
        let through = render(&guarded[..=i], false)?;
        if !through.starts_with(&prompt) || !full.starts_with(&through) {
            return Err(EngineError::Input(format!(
                "the chat template renders message {} differently depending on what follows \
                 it, so its tokens cannot be located for training",
                i + 1
            )));
        }
        spans.push((prompt.len(), through.len()));
    }
    if spans.is_empty() {
        return Err(EngineError::Input(
            "the conversation has no assistant message to learn from".into(),
        ));
    }
    let mut out = LabeledIds {
        ids: Vec::new(),
        trained: Vec::new(),
    };
    // Templates write BOS themselves when the model wants it.
    let mut add_bos = bos.is_empty() || !full.starts_with(bos.as_str());
    let mut push = |text: &str, trained: bool| -> Result<()> {
        if text.is_empty() && !add_bos {
            return Ok(());
        }
        let ids = tokenizer.encode_parts(&guard.split(text), add_bos)?;
        add_bos = false;
        out.trained.extend(std::iter::repeat_n(trained, ids.len()));
        out.ids.extend(ids);
        Ok(())
    };
    let mut pos = 0;
    for (start, end) in spans {
        push(&full[pos..start], false)?;
        push(&full[start..end], true)?;
        pos = end;
    }
    push(&full[pos..], false)?;
    Ok(out)
}

/// Prompt ids for plain text to complete: BOS as the model wants it, then the text encoded as
/// text (control-token look-alikes included).
pub fn completion_prompt(tokenizer: &Tokenizer, text: &str) -> Result<Vec<u32>> {
    let part = Part {
        text,
        parse_special: false,
    };
    tokenizer.encode_parts(&[part], true)
}

/// Replaces control-token text inside message content with markers before the template renders
/// it, then splits the rendered prompt back into template markup and protected text.
struct ContentGuard<'a> {
    controls: &'a ControlText,
    /// Marker prefix, unique per prompt so no message contains it by chance.
    open: String,
    originals: Vec<String>,
}

const MARK_CLOSE: char = '\u{E001}';

impl<'a> ContentGuard<'a> {
    fn new(controls: &'a ControlText) -> Self {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u8(0);
        ContentGuard {
            controls,
            open: format!("\u{E000}{:016x}:", h.finish()),
            originals: Vec::new(),
        }
    }

    /// The messages with every string in them protected.
    fn protect_messages(&mut self, messages: &[Message]) -> Vec<Message> {
        messages
            .iter()
            .map(|m| Message {
                role: m.role.clone(),
                content: self.protect(&m.content),
                tool_calls: m.tool_calls.as_ref().map(|v| self.protect_json(v)),
                name: m.name.as_deref().map(|n| self.protect(n)),
                tool_call_id: m.tool_call_id.as_deref().map(|n| self.protect(n)),
            })
            .collect()
    }

    fn protect(&mut self, content: &str) -> String {
        let Some(m) = &self.controls.matcher else {
            return content.to_string();
        };
        let mut out = String::with_capacity(content.len());
        let mut last = 0;
        for found in m.find_iter(content) {
            out.push_str(&content[last..found.start()]);
            out.push_str(&format!(
                "{}{}{MARK_CLOSE}",
                self.open,
                self.originals.len()
            ));
            self.originals
                .push(content[found.start()..found.end()].to_string());
            last = found.end();
        }
        out.push_str(&content[last..]);
        out
    }

    /// [`ContentGuard::protect`] on every string (keys included) of a JSON value.
    fn protect_json(&mut self, v: &serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        match v {
            Value::String(s) => Value::String(self.protect(s)),
            Value::Array(a) => Value::Array(a.iter().map(|x| self.protect_json(x)).collect()),
            Value::Object(o) => Value::Object(
                o.iter()
                    .map(|(k, x)| (self.protect(k), self.protect_json(x)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    fn split<'t>(&'t self, text: &'t str) -> Vec<Part<'t>> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(at) = rest.find(&self.open) {
            let after = &rest[at + self.open.len()..];
            let Some(end) = after.find(MARK_CLOSE) else {
                break;
            };
            let Some(original) = after[..end]
                .parse::<usize>()
                .ok()
                .and_then(|i| self.originals.get(i))
            else {
                break;
            };
            parts.push(Part {
                text: &rest[..at],
                parse_special: true,
            });
            parts.push(Part {
                text: original,
                parse_special: false,
            });
            rest = &after[end + MARK_CLOSE.len_utf8()..];
        }
        parts.push(Part {
            text: rest,
            parse_special: true,
        });
        parts
    }
}
