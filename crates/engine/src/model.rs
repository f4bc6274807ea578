//! A model ready to generate: decoder, tokenizer and chat template, loaded from a GGUF file or an
//! HF folder.

use std::path::Path;

use candle_core::Device;
use candle_core::quantized::gguf_file;
use forja_models::loader::LoadOptions;
use forja_models::{ContiguousKvCache, Decoder};

use crate::chat_template::{ChatTemplate, Message};
use crate::error::{EngineError, Result};
use crate::tokenizer::{Part, Tokenizer};

#[derive(Debug)]
pub struct LoadedModel {
    pub decoder: Decoder,
    pub tokenizer: Tokenizer,
    pub template: Option<ChatTemplate>,
    /// Display name (the file or folder name).
    pub name: String,
    /// Texts of the tokenizer's control tokens, longest first.
    control_texts: Vec<String>,
}

/// Replaces control-token text inside message content with markers before a template renders
/// it, then splits the rendered prompt back into template markup and protected text.
struct ContentGuard<'a> {
    controls: &'a [String],
    /// Marker prefix, unique per prompt so no message can contain it by chance.
    open: String,
    originals: Vec<String>,
}

const MARK_CLOSE: char = '\u{E001}';

impl<'a> ContentGuard<'a> {
    fn new(controls: &'a [String]) -> Self {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_usize(controls.len());
        ContentGuard {
            controls,
            open: format!("\u{E000}{:016x}:", h.finish()),
            originals: Vec::new(),
        }
    }

    fn protect(&mut self, content: &str) -> String {
        let mut out = String::with_capacity(content.len());
        let mut rest = content;
        loop {
            let found = self
                .controls
                .iter()
                .filter_map(|c| rest.find(c.as_str()).map(|at| (at, c.len())))
                .min_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
            let Some((at, len)) = found else {
                out.push_str(rest);
                return out;
            };
            out.push_str(&rest[..at]);
            out.push_str(&format!(
                "{}{}{MARK_CLOSE}",
                self.open,
                self.originals.len()
            ));
            self.originals.push(rest[at..at + len].to_string());
            rest = &rest[at + len..];
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

impl LoadedModel {
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        Self::load_with(path, device, LoadOptions::default())
    }

    pub fn load_with(path: &Path, device: &Device, options: LoadOptions) -> Result<Self> {
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let decoder = forja_models::loader::load_with(path, device, options)?;
        let tokenizer = if path.is_dir() {
            Tokenizer::from_hf_dir(path)?
        } else {
            let mut f = std::fs::File::open(path)
                .map_err(|e| EngineError::Input(format!("{}: {e}", path.display())))?;
            let content = gguf_file::Content::read(&mut f)
                .map_err(|e| EngineError::Input(format!("{}: {e}", path.display())))?;
            Tokenizer::from_gguf(&content, &path.display().to_string())?
        };
        if tokenizer.vocab_size() > decoder.config.vocab_size as usize {
            return Err(EngineError::Tokenizer {
                origin: path.display().to_string(),
                what: format!(
                    "tokenizer has {} tokens but the model's embedding has {}",
                    tokenizer.vocab_size(),
                    decoder.config.vocab_size
                ),
            });
        }
        let template = match &tokenizer.chat_template {
            Some(src) => Some(ChatTemplate::new(src, &path.display().to_string())?),
            None => None,
        };
        let mut control_texts = tokenizer.control_texts();
        control_texts.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
        Ok(LoadedModel {
            decoder,
            tokenizer,
            template,
            name,
            control_texts,
        })
    }

    /// Prompt ids for a conversation, through the model's chat template (or, for a model
    /// without one, the messages' text joined as a plain completion prompt). Control-token text
    /// inside a message (a user typing `<|im_end|>`) stays text: only the template's own markup
    /// becomes control tokens, so no message can forge a turn.
    pub fn chat_prompt(&self, messages: &[Message]) -> Result<Vec<u32>> {
        let Some(template) = &self.template else {
            let text = messages
                .iter()
                .map(|m| m.content.as_str())
                .collect::<Vec<_>>()
                .join("\n");
            let part = Part {
                text: &text,
                parse_special: false,
            };
            return self.tokenizer.encode_parts(&[part], true);
        };
        let mut guard = ContentGuard::new(&self.control_texts);
        let guarded: Vec<Message> = messages
            .iter()
            .map(|m| Message {
                content: guard.protect(&m.content),
                ..m.clone()
            })
            .collect();
        let text = template.render(
            &guarded,
            None,
            true,
            &self.tokenizer.special.bos_text,
            &self.tokenizer.special.eos_text,
        )?;
        let parts = guard.split(&text);
        // Templates write BOS themselves when the model wants it.
        let starts_with_bos = !self.tokenizer.special.bos_text.is_empty()
            && text.starts_with(&self.tokenizer.special.bos_text);
        self.tokenizer.encode_parts(&parts, !starts_with_bos)
    }

    pub fn new_cache(&self) -> ContiguousKvCache {
        ContiguousKvCache::new(self.decoder.num_layers())
    }
}
