//! LoRA adapters served beside a base model. A generation request picks one with
//! `"model": "base+adapter"` or an `adapter` field (both may be given if they agree); the base
//! model and every adapter of it share one engine, so requests for different adapters run in the
//! same batch without any adapter merged into the base.

use forja_engine::AdapterId;
use forja_engine::serving::Engine;

use crate::AppState;
use crate::error::ApiError;
use crate::models::{KeepAlive, ModelEntry};

/// Separates a model's name from an adapter's in a request's `model`.
pub const SEPARATOR: char = '+';

/// Whether `name` can name an adapter: letters, digits, `-`, `_` and `.`, not empty.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "adapter name `{name}` must be letters, digits, `-`, `_` or `.` (it is used as \
             MODEL{SEPARATOR}NAME in requests)"
        ))
    }
}

/// How an adapter of `entry` is named in `model` fields and model lists.
pub fn listed_name(entry: &ModelEntry, adapter: &str) -> String {
    format!("{}{SEPARATOR}{adapter}", entry.name)
}

/// The model and adapter a request names: `model` is a served model's name, or
/// `name+adapter`; `field` is the request's `adapter`, if given. An unknown adapter is a 404 that
/// lists the known ones.
pub fn resolve<'a>(
    state: &'a AppState,
    model: &str,
    field: Option<&str>,
) -> Result<(&'a ModelEntry, Option<String>), ApiError> {
    let (entry, named) = match state.models.find(model) {
        Ok(entry) => (entry, None),
        Err(not_found) => match model.rsplit_once(SEPARATOR) {
            Some((base, adapter)) => match state.models.find(base) {
                Ok(entry) => (entry, Some(adapter.to_string())),
                Err(_) => return Err(not_found),
            },
            None => return Err(not_found),
        },
    };
    let adapter = match (named, field) {
        (Some(a), Some(f)) if a != f => {
            return Err(ApiError::param(
                "adapter",
                format!("`model` names adapter `{a}` but `adapter` says `{f}`"),
            ));
        }
        (Some(a), _) => Some(a),
        (None, f) => f.map(str::to_string),
    };
    if let Some(a) = &adapter
        && !entry.adapters.contains(a)
    {
        return Err(not_found(entry, a));
    }
    Ok((entry, adapter))
}

fn not_found(entry: &ModelEntry, adapter: &str) -> ApiError {
    let known = if entry.adapters.is_empty() {
        format!(
            "{} is served without adapters (forja serve --adapter NAME=DIR adds some)",
            entry.name
        )
    } else {
        let names: Vec<String> = entry
            .adapters
            .iter()
            .map(|a| listed_name(entry, a))
            .collect();
        format!("adapters served here: `{}`", names.join("`, `"))
    };
    ApiError::adapter_not_found(&listed_name(entry, adapter), &known)
}

/// The chat engine of the model a request names and the id of its adapter (loading the model
/// first if needed, see [`crate::models::ModelPool::runner`]); counts the request per adapter.
pub async fn chat_engine(
    state: &AppState,
    model: &str,
    field: Option<&str>,
    keep_alive: Option<KeepAlive>,
) -> Result<(Engine, Option<AdapterId>), ApiError> {
    let (entry, adapter) = resolve(state, model, field)?;
    let name = entry.name.clone();
    let engine = state.models.engine(&name, keep_alive).await?;
    let id = match &adapter {
        None => None,
        Some(a) => match engine.model.adapter(a) {
            Some(served) => Some(served.id),
            None => return Err(not_found(entry, a)),
        },
    };
    state
        .metrics
        .count_model_request(&name, adapter.as_deref().unwrap_or(""));
    Ok((engine, id))
}
