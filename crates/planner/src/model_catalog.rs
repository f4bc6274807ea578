//! The model catalog: the major open model families with their real `config.json` numbers, kept as data
//! (`catalog/*.json`) and parsed by the same code that reads a user's `config.json`.

use serde::{Deserialize, Serialize};

use forja_arch::ModelDescription;

use crate::error::PlanError;
use crate::text_match::{normalize, suggestions};

/// What a model is good for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    General,
    Reasoning,
    Coding,
    Efficiency,
    Multimodal,
}

impl Task {
    pub fn parse(s: &str) -> Result<Self, PlanError> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "general" | "chat" => Task::General,
            "reasoning" => Task::Reasoning,
            "coding" | "code" => Task::Coding,
            "efficiency" | "fast" => Task::Efficiency,
            "multimodal" | "vision" => Task::Multimodal,
            other => {
                return Err(PlanError::Invalid {
                    what: "task",
                    why: format!(
                        "{other:?}: use general, reasoning, coding, efficiency or multimodal"
                    ),
                });
            }
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Task::General => "general",
            Task::Reasoning => "reasoning",
            Task::Coding => "coding",
            Task::Efficiency => "efficiency",
            Task::Multimodal => "multimodal",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CatalogEntry {
    pub name: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    pub family: String,
    pub display: String,
    pub hf_repo: String,
    /// A hub repository with GGUF files of this model (`forja pull NAME-q4_k_m` takes its file
    /// of that quantization).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gguf_repo: Option<String>,
    pub license: String,
    pub tasks: Vec<Task>,
    /// The parameter count the model's publisher states.
    pub published_params: Option<u64>,
    /// The model's `config.json` (architecture fields).
    pub config: serde_json::Value,
    #[serde(default)]
    pub notes: Option<String>,
}

impl CatalogEntry {
    pub fn describe(&self) -> Result<ModelDescription, PlanError> {
        Ok(ModelDescription::from_config_value(
            &self.config,
            &format!("catalog entry {}", self.name),
        )?)
    }
}

const FILES: &[(&str, &str)] = &[
    ("llama.json", include_str!("../catalog/llama.json")),
    ("mistral.json", include_str!("../catalog/mistral.json")),
    ("qwen.json", include_str!("../catalog/qwen.json")),
    ("deepseek.json", include_str!("../catalog/deepseek.json")),
    ("gemma.json", include_str!("../catalog/gemma.json")),
    ("phi.json", include_str!("../catalog/phi.json")),
    ("smollm.json", include_str!("../catalog/smollm.json")),
];

/// Every catalog entry, in file order.
pub fn models() -> Result<Vec<CatalogEntry>, PlanError> {
    let mut out = Vec::new();
    for (file, text) in FILES {
        let entries: Vec<CatalogEntry> =
            serde_json::from_str(text).map_err(|e| PlanError::Catalog {
                file,
                why: e.to_string(),
            })?;
        out.extend(entries);
    }
    Ok(out)
}

/// Looks a model up by name or alias (`llama-3.1-8b-instruct`, `llama3.1:8b`). A name without
/// the `-instruct` / `-it` suffix finds the instruct model.
pub fn find_model(query: &str) -> Result<CatalogEntry, PlanError> {
    let all = models()?;
    let q = normalize(query);
    let keys = |e: &CatalogEntry| {
        let mut k = vec![normalize(&e.name), normalize(&e.hf_repo)];
        k.extend(e.aliases.iter().map(|a| normalize(a)));
        if let Some((_, repo)) = e.hf_repo.split_once('/') {
            k.push(normalize(repo));
        }
        for suffix in [" instruct", " it"] {
            if let Some(base) = normalize(&e.name).strip_suffix(suffix) {
                k.push(base.to_string());
            }
        }
        k
    };
    if let Some(e) = all.iter().find(|e| keys(e).contains(&q)) {
        return Ok(e.clone());
    }
    let names: Vec<&str> = all.iter().map(|e| e.name.as_str()).collect();
    Err(PlanError::UnknownModel {
        given: query.to_string(),
        suggestions: suggestions(query, &names),
    })
}
