//! Opening a model from disk: a GGUF file, or an HF folder (`config.json` + safetensors).

use std::path::Path;

use candle_core::Device;
use forja_arch::{Container, ModelDescription};

use crate::decoder::Decoder;
use crate::error::{ModelError, Result};
use crate::weight_source::{GgufSource, SafetensorsSource, WeightSource};

/// How to load weights.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOptions {
    /// Dequantize GGUF weights to f32 (exact reference arithmetic; several times the memory).
    pub dequantize: bool,
    /// Context length to run with (default and maximum: the model's own). It sets what the
    /// generation loop accepts and, for LongRoPE models, which RoPE factors apply.
    pub context: Option<u64>,
}

/// Loads the decoder stored at `path` onto `device`.
pub fn load(path: &Path, device: &Device) -> Result<Decoder> {
    load_with(path, device, LoadOptions::default())
}

/// [`load`] with options.
pub fn load_with(path: &Path, device: &Device, options: LoadOptions) -> Result<Decoder> {
    let desc = ModelDescription::from_path(path)?;
    let stored = desc.stored.as_ref().ok_or_else(|| ModelError::Weights {
        path: path.display().to_string(),
        what: "no weights found (a config.json alone describes a model but cannot run it)".into(),
    })?;
    let source: Box<dyn WeightSource> = match stored.container {
        Container::Gguf => Box::new(GgufSource::open(
            &stored.files[0],
            device,
            options.dequantize,
        )?),
        Container::Safetensors => Box::new(SafetensorsSource::open(
            &stored.files,
            desc.config.family,
            device,
        )?),
    };
    let mut config = desc.config.clone();
    if let Some(c) = options.context {
        if c == 0 {
            return Err(ModelError::Input("a context of 0 tokens".into()));
        }
        config.max_context = config.max_context.min(c);
    }
    Decoder::load(&config, source.as_ref(), device)
}
