//! A model ready to generate: decoder, tokenizer and chat template, loaded from a GGUF file or an
//! HF folder.

use std::path::Path;

use candle_core::Device;
use candle_core::quantized::gguf_file;
use forja_models::loader::LoadOptions;
use forja_models::{ContiguousKvCache, Decoder};

use crate::chat_template::{ChatTemplate, Message};
use crate::error::{EngineError, Result};
use crate::tokenizer::Tokenizer;

#[derive(Debug)]
pub struct LoadedModel {
    pub decoder: Decoder,
    pub tokenizer: Tokenizer,
    pub template: Option<ChatTemplate>,
    /// Display name (the file or folder name).
    pub name: String,
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
        Ok(LoadedModel {
            decoder,
            tokenizer,
            template,
            name,
        })
    }

    /// Prompt ids for a conversation, through the model's chat template (or, for a model
    /// without one, the messages' text joined as a plain completion prompt).
    pub fn chat_prompt(&self, messages: &[Message]) -> Result<Vec<u32>> {
        let text = match &self.template {
            Some(t) => t.render(
                messages,
                None,
                true,
                &self.tokenizer.special.bos_text,
                &self.tokenizer.special.eos_text,
            )?,
            None => messages
                .iter()
                .map(|m| m.content.as_str())
                .collect::<Vec<_>>()
                .join("\n"),
        };
        // Templates write BOS themselves when the model wants it.
        let starts_with_bos = !self.tokenizer.special.bos_text.is_empty()
            && text.starts_with(&self.tokenizer.special.bos_text);
        self.tokenizer
            .encode(&text, self.template.is_none() || !starts_with_bos)
    }

    pub fn new_cache(&self) -> ContiguousKvCache {
        ContiguousKvCache::new(self.decoder.num_layers())
    }
}
