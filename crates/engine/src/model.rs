//! A model ready to generate: decoder, tokenizer and chat template, loaded from a GGUF file or an
//! HF folder.

use std::path::Path;

use candle_core::Device;
use candle_core::quantized::gguf_file;
use forja_models::loader::LoadOptions;
use forja_models::{ContiguousKvCache, Decoder};

use crate::chat_template::{ChatTemplate, Message};
use crate::error::{EngineError, Result};
use crate::prompt::{ControlText, chat_prompt};
use crate::tokenizer::Tokenizer;

#[derive(Debug)]
pub struct LoadedModel {
    pub decoder: Decoder,
    pub tokenizer: Tokenizer,
    pub template: Option<ChatTemplate>,
    /// Display name (the file or folder name).
    pub name: String,
    controls: ControlText,
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
        let controls = ControlText::new(&tokenizer)?;
        Ok(LoadedModel {
            decoder,
            tokenizer,
            template,
            name,
            controls,
        })
    }

    /// Prompt ids for a conversation through the model's chat template (see
    /// [`crate::prompt::chat_prompt`]).
    pub fn chat_prompt(
        &self,
        messages: &[Message],
        tools: Option<&serde_json::Value>,
    ) -> Result<Vec<u32>> {
        chat_prompt(
            &self.tokenizer,
            self.template.as_ref(),
            &self.controls,
            messages,
            tools,
        )
    }

    pub fn new_cache(&self) -> ContiguousKvCache {
        ContiguousKvCache::new(self.decoder.num_layers())
    }
}
