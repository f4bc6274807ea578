//! A model ready to generate: decoder, tokenizer and chat template, loaded from a GGUF file or an
//! HF folder.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use candle_core::Device;
use forja_models::loader::LoadOptions;
use forja_models::{AdapterId, ContiguousKvCache, Decoder, LoraSlot, LoraWeights};

use crate::chat_template::{ChatTemplate, Message};
use crate::constrain::{Constraint, GrammarCompiler, OutputFormat};
use crate::error::{EngineError, Result};
use crate::prompt::{ControlText, LabeledIds, chat_prompt, chat_training_ids, completion_prompt};
use crate::tokenizer::Tokenizer;

#[derive(Debug)]
pub struct LoadedModel {
    pub decoder: Decoder,
    pub tokenizer: Arc<Tokenizer>,
    pub template: Option<ChatTemplate>,
    /// Display name (the file or folder name).
    pub name: String,
    /// The file or folder it was loaded from.
    pub path: std::path::PathBuf,
    /// LoRA adapters attached for serving, chosen per request ([`crate::serving::Job::adapter`]).
    pub adapters: Vec<ServedAdapter>,
    controls: ControlText,
    /// Built on first use of structured output.
    grammar: OnceLock<std::result::Result<GrammarCompiler, String>>,
}

/// A LoRA adapter attached to a model for serving beside its base.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedAdapter {
    /// What requests call it.
    pub name: String,
    /// Its id in the decoder (`SeqStep::adapter`); never 0.
    pub id: AdapterId,
    /// Bytes its matrices hold.
    pub bytes: u64,
}

/// How a model at `path` is named to users: its file or folder name.
pub fn display_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

impl LoadedModel {
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        Self::load_with(path, device, LoadOptions::default())
    }

    /// Loads for the CPU with the model's quantized weights, at `context` tokens (default: its
    /// own).
    pub fn load_cpu(path: &Path, context: Option<u64>) -> Result<Self> {
        let options = LoadOptions {
            context,
            ..Default::default()
        };
        Self::load_with(path, &Device::Cpu, options)
    }

    pub fn load_with(path: &Path, device: &Device, options: LoadOptions) -> Result<Self> {
        let name = display_name(path);
        let decoder = forja_models::loader::load_with(path, device, options)?;
        let tokenizer = if path.is_dir() {
            Tokenizer::from_hf_dir(path)?
        } else {
            Tokenizer::from_gguf_path(path)?
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
            tokenizer: Arc::new(tokenizer),
            template,
            name,
            path: path.to_path_buf(),
            adapters: Vec::new(),
            controls,
            grammar: OnceLock::new(),
        })
    }

    /// Attaches `weights` as served adapter `name` (checked against the model: every module it
    /// adapts must exist with shapes that fit); requests choose it by name.
    pub fn add_adapter(&mut self, name: &str, weights: &LoraWeights) -> Result<AdapterId> {
        if self.adapters.iter().any(|a| a.name == name) {
            return Err(EngineError::Input(format!("two adapters are named {name}")));
        }
        let id = self.adapters.iter().map(|a| a.id).max().unwrap_or(0) + 1;
        self.decoder
            .attach_lora(weights, LoraSlot::Served(id))
            .map_err(|e| {
                EngineError::Input(format!("adapter {name} does not fit {}: {e}", self.name))
            })?;
        self.adapters.push(ServedAdapter {
            name: name.to_string(),
            id,
            bytes: weights.bytes(),
        });
        Ok(id)
    }

    /// The served adapter called `name`.
    pub fn adapter(&self, name: &str) -> Option<&ServedAdapter> {
        self.adapters.iter().find(|a| a.name == name)
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

    /// A conversation's ids with the assistant turns marked, for training (see
    /// [`crate::prompt::chat_training_ids`]). Needs the model's chat template.
    pub fn chat_training_ids(
        &self,
        messages: &[Message],
        tools: Option<&serde_json::Value>,
    ) -> Result<LabeledIds> {
        let template = self.template.as_ref().ok_or_else(|| {
            EngineError::Input(format!(
                "{} has no chat template, so conversations cannot be formatted for it",
                self.name
            ))
        })?;
        chat_training_ids(&self.tokenizer, template, &self.controls, messages, tools)
    }

    /// Prompt ids for plain text to complete (no chat template): the text is text, control-token
    /// look-alikes included.
    pub fn completion_prompt(&self, text: &str) -> Result<Vec<u32>> {
        completion_prompt(&self.tokenizer, text)
    }

    /// A fresh constraint that makes the output follow `format`.
    pub fn constraint(&self, format: &OutputFormat) -> Result<Constraint> {
        let compiler = self
            .grammar
            .get_or_init(|| {
                GrammarCompiler::new(Arc::clone(&self.tokenizer)).map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| EngineError::Input(e.clone()))?;
        compiler.compile(format)
    }

    pub fn new_cache(&self) -> ContiguousKvCache {
        self.decoder.new_cache()
    }
}
