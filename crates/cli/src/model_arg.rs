//! Resolving the MODEL argument: a file or folder on disk, else a catalog name.

use std::path::Path;

use anyhow::{Context, Result, bail};
use forja_arch::ModelDescription;
use forja_planner::model_catalog::{CatalogEntry, find_model};

/// A resolved model, with its catalog entry when it came from the catalog.
pub struct ResolvedModel {
    pub description: ModelDescription,
    pub entry: Option<CatalogEntry>,
}

pub fn resolve(arg: &str) -> Result<ResolvedModel> {
    let path = Path::new(arg);
    if path.exists() {
        let description = ModelDescription::from_path(path)?;
        return Ok(ResolvedModel {
            description,
            entry: None,
        });
    }
    let looks_like_path = arg.contains(std::path::MAIN_SEPARATOR)
        || arg.starts_with('.')
        || [".gguf", ".json", ".safetensors"]
            .iter()
            .any(|e| arg.ends_with(e));
    match find_model(arg) {
        Ok(entry) => {
            let mut description = entry
                .describe()
                .with_context(|| format!("catalog entry {}", entry.name))?;
            description.origin = entry.name.clone();
            Ok(ResolvedModel {
                description,
                entry: Some(entry),
            })
        }
        Err(_) if looks_like_path => bail!("no such file or folder: {arg}"),
        Err(e) => Err(e.into()),
    }
}
