//! How an encoder's token vectors become one sentence vector: the sentence-transformers metadata
//! of a model folder (`modules.json`, the pooling module's `config.json`, a `Normalize` module,
//! `sentence_bert_config.json`). A folder without it gets mean pooling and L2 normalization,
//! what most embedding models use.
//!
//! Keys follow sentence-transformers' `models/Pooling.py` and `models/Transformer.py`.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::ArchError;

/// How token vectors `[len, hidden]` are reduced to one `[hidden]` (padding never counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// The first token's vector (`[CLS]`).
    Cls,
    /// The average over the tokens.
    Mean,
    /// The elementwise maximum over the tokens.
    Max,
    /// The sum over the tokens divided by √len.
    MeanSqrtLen,
    /// The last token's vector.
    LastToken,
}

/// The sentence-embedding head of a model folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentenceEmbeddingConfig {
    pub pooling: Pooling,
    /// Scale each sentence vector to unit L2 norm (a `Normalize` module).
    pub normalize: bool,
    /// The longest input sentence-transformers feeds the model, in tokens
    /// (`sentence_bert_config.json`); it may be below the model's position table.
    pub max_seq_length: Option<usize>,
    /// Lowercase texts before tokenizing (`do_lower_case`).
    pub lowercase: bool,
}

impl Default for SentenceEmbeddingConfig {
    fn default() -> Self {
        SentenceEmbeddingConfig {
            pooling: Pooling::Mean,
            normalize: true,
            max_seq_length: None,
            lowercase: false,
        }
    }
}

impl SentenceEmbeddingConfig {
    /// Reads the metadata of the model folder `dir`; absent files mean the defaults.
    pub fn from_dir(dir: &Path) -> Result<Self, ArchError> {
        let mut config = SentenceEmbeddingConfig::default();
        if let Some(st) = read_json(&dir.join("sentence_bert_config.json"))? {
            let path = dir.join("sentence_bert_config.json");
            config.max_seq_length = match st.get("max_seq_length") {
                None | Some(Value::Null) => None,
                Some(v) => Some(
                    v.as_u64()
                        .filter(|&n| n > 0)
                        .and_then(|n| usize::try_from(n).ok())
                        .ok_or_else(|| {
                            invalid(&path, format!("max_seq_length must be positive, found {v}"))
                        })?,
                ),
            };
            config.lowercase = st
                .get("do_lower_case")
                .and_then(Value::as_bool)
                .unwrap_or(false);
        }
        let modules_path = dir.join("modules.json");
        let Some(modules) = read_json(&modules_path)? else {
            return Ok(config);
        };
        let modules = modules
            .as_array()
            .ok_or_else(|| invalid(&modules_path, "expected a list of modules".into()))?;
        config.normalize = false;
        for module in modules {
            let kind = module.get("type").and_then(Value::as_str).unwrap_or("");
            let sub = module.get("path").and_then(Value::as_str).unwrap_or("");
            // "sentence_transformers.models.Pooling" → "Pooling".
            match kind.rsplit('.').next().unwrap_or(kind) {
                "Transformer" if sub.is_empty() => {}
                "Transformer" => {
                    return Err(invalid(
                        &modules_path,
                        format!(
                            "the transformer is stored in the subfolder {sub:?}; load that folder"
                        ),
                    ));
                }
                "Pooling" => config.pooling = read_pooling(&dir.join(sub).join("config.json"))?,
                "Normalize" => config.normalize = true,
                _ => {
                    return Err(invalid(
                        &modules_path,
                        format!(
                            "module {kind:?} ({sub:?}) is not supported: forja runs Transformer, \
                             Pooling and Normalize modules"
                        ),
                    ));
                }
            }
        }
        Ok(config)
    }
}

/// The pooling mode of a sentence-transformers `Pooling` module's `config.json`.
fn read_pooling(path: &Path) -> Result<Pooling, ArchError> {
    let value = read_json(path)?.ok_or_else(|| {
        invalid(
            path,
            "missing, but modules.json lists a Pooling module".into(),
        )
    })?;
    const MODES: [(&str, Option<Pooling>); 6] = [
        ("pooling_mode_cls_token", Some(Pooling::Cls)),
        ("pooling_mode_mean_tokens", Some(Pooling::Mean)),
        ("pooling_mode_max_tokens", Some(Pooling::Max)),
        (
            "pooling_mode_mean_sqrt_len_tokens",
            Some(Pooling::MeanSqrtLen),
        ),
        ("pooling_mode_lasttoken", Some(Pooling::LastToken)),
        ("pooling_mode_weightedmean_tokens", None),
    ];
    let on: Vec<(&str, Option<Pooling>)> = MODES
        .into_iter()
        .filter(|(key, _)| value.get(key).and_then(Value::as_bool) == Some(true))
        .collect();
    match on.as_slice() {
        [(_, Some(mode))] => Ok(*mode),
        [(key, None)] => Err(invalid(path, format!("{key} is not supported"))),
        [] => Err(invalid(path, "no pooling mode is set".into())),
        several => Err(invalid(
            path,
            format!(
                "several pooling modes at once ({}) are not supported",
                several
                    .iter()
                    .map(|(k, _)| *k)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

/// The parsed JSON at `path`, or `None` when there is no such file.
fn read_json(path: &Path) -> Result<Option<Value>, ArchError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ArchError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| invalid(path, format!("not valid JSON: {e}")))
}

fn invalid(path: &Path, what: String) -> ArchError {
    ArchError::Config {
        path: Some(PathBuf::from(path)),
        what,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code fails loudly")]

    use super::*;

    const ST_MODULES: &str = r#"[
        {"path": "", "type": "sentence_transformers.models.Transformer"},
        {"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}
    ]"#;

    fn folder(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            let p = dir.path().join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        dir
    }

    fn pooling_json(key: &str) -> String {
        format!(r#"{{"word_embedding_dimension": 384, "{key}": true, "include_prompt": true}}"#)
    }

    #[test]
    fn a_folder_without_metadata_gets_mean_and_normalize() {
        let dir = folder(&[]);
        let c = SentenceEmbeddingConfig::from_dir(dir.path()).unwrap();
        assert_eq!(c, SentenceEmbeddingConfig::default());
        assert_eq!((c.pooling, c.normalize), (Pooling::Mean, true));
    }

    #[test]
    fn sentence_transformers_metadata_is_read() {
        let cases = [
            ("pooling_mode_cls_token", Pooling::Cls),
            ("pooling_mode_mean_tokens", Pooling::Mean),
            ("pooling_mode_max_tokens", Pooling::Max),
            ("pooling_mode_mean_sqrt_len_tokens", Pooling::MeanSqrtLen),
            ("pooling_mode_lasttoken", Pooling::LastToken),
        ];
        for (key, mode) in cases {
            let pooling = pooling_json(key);
            let dir = folder(&[
                ("modules.json", ST_MODULES),
                ("1_Pooling/config.json", &pooling),
                (
                    "sentence_bert_config.json",
                    r#"{"max_seq_length": 256, "do_lower_case": false}"#,
                ),
            ]);
            let c = SentenceEmbeddingConfig::from_dir(dir.path()).unwrap();
            assert_eq!(c.pooling, mode, "{key}");
            assert!(c.normalize);
            assert_eq!(c.max_seq_length, Some(256));
        }
    }

    #[test]
    fn without_a_normalize_module_vectors_stay_unnormalized() {
        let modules = r#"[{"path": "", "type": "sentence_transformers.models.Transformer"},
                          {"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]"#;
        let pooling = pooling_json("pooling_mode_cls_token");
        let dir = folder(&[
            ("modules.json", modules),
            ("1_Pooling/config.json", &pooling),
        ]);
        let c = SentenceEmbeddingConfig::from_dir(dir.path()).unwrap();
        assert_eq!((c.pooling, c.normalize), (Pooling::Cls, false));
    }

    #[test]
    fn unsupported_heads_are_refused_naming_the_file() {
        let dense = r#"[{"path": "", "type": "sentence_transformers.models.Transformer"},
                        {"path": "2_Dense", "type": "sentence_transformers.models.Dense"}]"#;
        let dir = folder(&[("modules.json", dense)]);
        let e = SentenceEmbeddingConfig::from_dir(dir.path()).unwrap_err();
        assert!(
            e.to_string().contains("Dense") && e.to_string().contains("modules.json"),
            "{e}"
        );

        let dir = folder(&[("modules.json", ST_MODULES)]);
        let e = SentenceEmbeddingConfig::from_dir(dir.path()).unwrap_err();
        assert!(e.to_string().contains("1_Pooling"), "{e}");

        let both = r#"{"pooling_mode_cls_token": true, "pooling_mode_mean_tokens": true}"#;
        let dir = folder(&[
            ("modules.json", ST_MODULES),
            ("1_Pooling/config.json", both),
        ]);
        let e = SentenceEmbeddingConfig::from_dir(dir.path()).unwrap_err();
        assert!(e.to_string().contains("several pooling modes"), "{e}");

        let weighted = pooling_json("pooling_mode_weightedmean_tokens");
        let dir = folder(&[
            ("modules.json", ST_MODULES),
            ("1_Pooling/config.json", &weighted),
        ]);
        let e = SentenceEmbeddingConfig::from_dir(dir.path()).unwrap_err();
        assert!(e.to_string().contains("weightedmean"), "{e}");
    }
}
