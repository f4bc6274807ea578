//! What the server tells clients about its model (`/api/tags`, `/api/show`, `/v1/models`),
//! read once from the model's files through `arch`.

use std::path::Path;
use std::time::UNIX_EPOCH;

use forja_arch::ModelDescription;
use forja_arch::safetensors_header::SafetensorsHeader;

/// Facts about the served model.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelCard {
    /// The family's `general.architecture` name (`llama`, `qwen2`, `gemma3`…).
    pub family: String,
    pub parameters: u64,
    /// Storage format (`Q4_K_M`, `BF16`…), empty when unknown.
    pub quantization: String,
    pub file_bytes: u64,
    /// Unix seconds the model file was last modified.
    pub modified: u64,
    pub context_length: u64,
    /// `gguf` or `safetensors`.
    pub format: &'static str,
}

impl ModelCard {
    /// Reads the card of the model at `path`; what cannot be read stays empty.
    pub fn read(path: &Path) -> Self {
        let mut card = ModelCard {
            format: if path.is_dir() { "safetensors" } else { "gguf" },
            ..Default::default()
        };
        if let Ok(enc) = forja_arch::encoder_config::EncoderConfig::from_dir(path) {
            // An embedding model: its facts from config.json and the safetensors header.
            card.family = "bert".into();
            card.context_length = enc.max_position_embeddings as u64;
            if let Ok(h) = SafetensorsHeader::read_path(&path.join("model.safetensors")) {
                card.parameters = h
                    .tensors
                    .iter()
                    .map(|t| t.shape.iter().product::<u64>())
                    .sum();
                card.file_bytes = h.file_bytes;
                card.quantization = h
                    .tensors
                    .first()
                    .map(|t| t.dtype.clone())
                    .unwrap_or_default();
            }
        } else if let Ok(desc) = ModelDescription::from_path(path) {
            card.family = desc.config.family.gguf_arch().to_string();
            card.parameters = desc.weights(None).params;
            card.context_length = desc.config.max_context;
            card.quantization = desc
                .stored_format()
                .map(|f| f.to_string().to_uppercase())
                .unwrap_or_default();
            card.file_bytes = desc.stored.as_ref().map_or(0, |s| s.file_bytes);
        }
        card.modified = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        card
    }

    /// `135M`, `494M`, `8.0B`: Ollama's parameter-size label.
    pub fn parameter_size(&self) -> String {
        let p = self.parameters as f64;
        if p >= 1e9 {
            format!("{:.1}B", p / 1e9)
        } else {
            format!("{:.0}M", p / 1e6)
        }
    }
}

/// RFC 3339 UTC time of Unix seconds `secs` (`2026-11-26T15:47:30Z`).
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_format_as_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_707_250), "2026-11-26T15:34:10Z");
        assert_eq!(rfc3339(4_107_542_399), "2100-02-28T23:59:59Z");
    }

    #[test]
    fn parameter_sizes_read_like_ollama() {
        let c = |parameters| ModelCard {
            parameters,
            ..Default::default()
        };
        assert_eq!(c(134_515_008).parameter_size(), "135M");
        assert_eq!(c(8_030_261_248).parameter_size(), "8.0B");
    }
}
