//! The models a server offers: each is loaded on first use, kept while it is used, unloaded after
//! an idle keep-alive, and refused — with the numbers — when `arch`'s byte math says it does not
//! fit in the memory budget next to the models already loaded (idle ones are unloaded first to
//! make room).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use forja_arch::kv_cache::kv_bytes_per_token;
use forja_arch::workspace::{StepShape, inference_workspace_bytes};
use forja_arch::{DecoderConfig, KvDtype, ModelDescription, TokenizerShape};
use forja_engine::LoadedModel;
use forja_engine::LoraWeights;
use forja_engine::RunnerDevice;
use forja_engine::embed::{DEFAULT_MAX_BATCH_TOKENS, Embedder, is_encoder_dir};
use forja_engine::embed_serving::{EmbedEngine, EmbedServingConfig};
use forja_engine::serving::{Engine, ServingConfig};

use crate::card::ModelCard;
use crate::error::ApiError;

/// How long a model stays loaded after its last request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAlive {
    For(Duration),
    Forever,
}

impl KeepAlive {
    /// Ollama's `keep_alive`: a duration (`"5m"`, `"30s"`, `"1h"`, `"500ms"`) or a number of
    /// seconds; negative means forever, 0 unloads as soon as the model is idle.
    pub fn parse(v: &serde_json::Value) -> Result<Self, String> {
        let secs = match v {
            serde_json::Value::Number(n) => n.as_f64().ok_or("not a number")?,
            serde_json::Value::String(s) => {
                let s = s.trim();
                let (num, mult) = if let Some(x) = s.strip_suffix("ms") {
                    (x, 0.001)
                } else if let Some(x) = s.strip_suffix('s') {
                    (x, 1.0)
                } else if let Some(x) = s.strip_suffix('m') {
                    (x, 60.0)
                } else if let Some(x) = s.strip_suffix('h') {
                    (x, 3600.0)
                } else {
                    (s, 1.0)
                };
                num.trim().parse::<f64>().map_err(|_| {
                    format!("keep_alive `{s}` is not a duration (examples: 5m, 30s, 1h, -1)")
                })? * mult
            }
            other => {
                return Err(format!(
                    "keep_alive must be a duration or seconds, not {other}"
                ));
            }
        };
        if !secs.is_finite() {
            return Err("keep_alive must be finite".into());
        }
        Ok(if secs < 0.0 {
            KeepAlive::Forever
        } else {
            KeepAlive::For(Duration::from_secs_f64(secs))
        })
    }
}

/// Bytes a loaded model holds, from the same functions the planner uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Footprint {
    pub weights: u64,
    pub kv_cache: u64,
    pub workspace: u64,
    /// The served LoRA adapters' matrices (f32).
    pub adapters: u64,
    /// The tokenizer's tables (in this machine's memory wherever the model runs).
    pub tokenizer: u64,
    /// The KV cache lives in GPU memory, not in this machine's.
    pub kv_on_gpu: bool,
}

impl Footprint {
    /// Bytes of this machine's memory the model holds (what the memory budget counts).
    pub fn total(&self) -> u64 {
        let kv = if self.kv_on_gpu { 0 } else { self.kv_cache };
        self.weights + kv + self.workspace + self.adapters + self.tokenizer
    }
}

/// The KV pool a model served on a GPU asks for unless told otherwise: room for 512k tokens of
/// every layer (256 sequences of 2k; more where sliding-window layers keep only their window),
/// at least one context; the GPU runner keeps as many blocks as fit beside the weights.
pub fn default_gpu_kv_bytes(cfg: &DecoderConfig) -> u64 {
    let per_token = kv_bytes_per_token(cfg, KvDtype::F16);
    (per_token * (cfg.max_context as f64).max(524_288.0)) as u64
}

/// The KV pool a model gets unless told otherwise: room for two full contexts, between 16k
/// and 64k tokens of every layer (more tokens where sliding-window layers keep only their
/// window), at most a quarter of `available` and never less than one context.
pub fn default_kv_bytes(cfg: &DecoderConfig, available: Option<u64>) -> u64 {
    // The cache holds f16 on the CPU (`Decoder::kv_dtype`), as the planner assumes.
    let per_token = kv_bytes_per_token(cfg, KvDtype::F16);
    let ctx = cfg.max_context as f64;
    let want = per_token * (2.0 * ctx).clamp(16_384.0, 65_536.0);
    let cap = available.map_or(f64::INFINITY, |b| b as f64 / 4.0);
    want.min(cap).max(per_token * ctx) as u64
}

/// How every model of the pool is loaded and served.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Batching and queue settings; `kv_bytes` is replaced per model unless `kv_bytes` is set.
    pub serving: ServingConfig,
    /// The KV pool of every model; `None` = [`default_kv_bytes`].
    pub kv_bytes: Option<u64>,
    /// Context length of every model; `None` = its own.
    pub context: Option<u64>,
    pub keep_alive: KeepAlive,
    /// Bytes all loaded models together may hold.
    pub memory_budget: u64,
    /// Memory available on this machine (caps the default KV pool).
    pub available_memory: Option<u64>,
}

/// A loaded model: a text generator or an embedding model.
#[derive(Debug, Clone)]
pub enum Runner {
    Chat(Engine),
    Embed(EmbedEngine),
}

impl Runner {
    /// Requests queued or running.
    pub fn pending(&self) -> usize {
        match self {
            Runner::Chat(e) => e.pending(),
            Runner::Embed(e) => e.pending(),
        }
    }

    /// The chat engine, if this is one.
    pub fn chat(&self) -> Option<&Engine> {
        match self {
            Runner::Chat(e) => Some(e),
            Runner::Embed(_) => None,
        }
    }
}

/// What a model does, known from its files before it is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    Chat,
    Embedding,
}

struct Loaded {
    runner: Runner,
    last_used: Instant,
    keep_alive: KeepAlive,
}

/// One model the server offers.
pub struct ModelEntry {
    pub name: String,
    pub path: Option<PathBuf>,
    pub card: ModelCard,
    pub kind: ModelKind,
    /// What loading it costs (zero for a model started outside the pool).
    pub footprint: Footprint,
    /// LoRA adapters served beside it (requests say `name+adapter`), in order.
    pub adapters: Vec<String>,
    /// Their matrices, attached each time the model is loaded (empty for a model started
    /// outside the pool, whose engine has them already).
    adapter_weights: Vec<LoraWeights>,
    slot: tokio::sync::Mutex<Option<Loaded>>,
    /// A load is in progress: other requests are told to retry.
    loading: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for ModelEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelEntry")
            .field("name", &self.name)
            .field("path", &self.path)
            .field("footprint", &self.footprint)
            .field("adapters", &self.adapters)
            .finish()
    }
}

impl ModelEntry {
    /// Whether `name` designates this model: its name, or that name without `.gguf`, each
    /// optionally with Ollama's `:latest` tag.
    pub fn answers_to(&self, name: &str) -> bool {
        let name = name.strip_suffix(":latest").unwrap_or(name);
        let n = self.name.as_str();
        name == n || n.strip_suffix(".gguf") == Some(name)
    }

    /// Whether the model is being loaded now.
    pub fn is_loading(&self) -> bool {
        self.loading.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The loaded model, if any, without waiting.
    pub fn loaded(&self) -> Option<(Runner, Option<Instant>)> {
        let slot = self.slot.try_lock().ok()?;
        slot.as_ref().map(|l| {
            let expires = match l.keep_alive {
                KeepAlive::Forever => None,
                KeepAlive::For(d) => Some(l.last_used + d),
            };
            (l.runner.clone(), expires)
        })
    }
}

/// Every model of a server.
#[derive(Debug)]
pub struct ModelPool {
    pub entries: Vec<Arc<ModelEntry>>,
    config: Option<PoolConfig>,
    /// Bytes reserved by loaded (or loading) models.
    used: Mutex<u64>,
}

impl ModelPool {
    /// A pool of one model already running, never unloaded.
    pub fn preloaded(engine: Engine) -> Self {
        let entry = ModelEntry {
            name: engine.model.name.clone(),
            card: ModelCard::read(&engine.model.path),
            kind: ModelKind::Chat,
            path: None,
            footprint: Footprint::default(),
            adapters: engine
                .model
                .adapters
                .iter()
                .map(|a| a.name.clone())
                .collect(),
            adapter_weights: Vec::new(),
            slot: tokio::sync::Mutex::new(Some(Loaded {
                runner: Runner::Chat(engine),
                last_used: Instant::now(),
                keep_alive: KeepAlive::Forever,
            })),
            loading: false.into(),
        };
        ModelPool {
            entries: vec![Arc::new(entry)],
            config: None,
            used: Mutex::new(0),
        }
    }

    /// A pool of models at `paths`, none loaded yet. Each file's header is read now, so a
    /// missing or broken file is an error at start, not at the first request.
    pub fn from_paths(paths: &[PathBuf], config: PoolConfig) -> Result<Self, String> {
        let named: Vec<(String, PathBuf)> = paths
            .iter()
            .map(|p| (forja_engine::model::display_name(p), p.clone()))
            .collect();
        Self::from_named_paths(&named, config)
    }

    /// A pool of models at the given paths, each served under its given name (a store name, or
    /// the file name).
    pub fn from_named_paths(
        models: &[(String, PathBuf)],
        config: PoolConfig,
    ) -> Result<Self, String> {
        let available = config.available_memory;
        let mut entries: Vec<Arc<ModelEntry>> = Vec::new();
        for (name, path) in models {
            let name = name.clone();
            if entries.iter().any(|e| e.name == name) {
                return Err(format!(
                    "two models are named {name}; rename one of the files"
                ));
            }
            if is_encoder_dir(path) {
                let card = ModelCard::read(path);
                entries.push(Arc::new(ModelEntry {
                    name,
                    footprint: encoder_footprint(path, &card)?,
                    card,
                    kind: ModelKind::Embedding,
                    path: Some(path.clone()),
                    adapters: Vec::new(),
                    adapter_weights: Vec::new(),
                    slot: tokio::sync::Mutex::new(None),
                    loading: false.into(),
                }));
                continue;
            }
            let desc = ModelDescription::from_path(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let mut cfg = desc.config.clone();
            if let Some(c) = config.context {
                cfg.max_context = c;
            }
            let s = &config.serving;
            let footprint = Footprint {
                weights: desc.weights(None).total_bytes,
                kv_cache: config.kv_bytes.unwrap_or_else(|| match s.device {
                    RunnerDevice::Cpu => default_kv_bytes(&cfg, available),
                    RunnerDevice::Cuda(_) => default_gpu_kv_bytes(&cfg),
                }),
                kv_on_gpu: s.device != RunnerDevice::Cpu,
                workspace: inference_workspace_bytes(
                    &cfg,
                    StepShape {
                        step_tokens: s.max_batched_tokens as u64,
                        num_seqs: s.max_running as u64,
                        act_bytes: 4,
                        // Host memory: the engine's CPU buffers (a GPU's are on the card).
                        all_logits: false,
                    },
                ),
                adapters: 0,
                tokenizer: desc.tokenizer.heap_bytes(),
            };
            entries.push(Arc::new(ModelEntry {
                name,
                card: ModelCard::read(path),
                kind: ModelKind::Chat,
                path: Some(path.clone()),
                footprint,
                adapters: Vec::new(),
                adapter_weights: Vec::new(),
                slot: tokio::sync::Mutex::new(None),
                loading: false.into(),
            }));
        }
        if entries.is_empty() {
            return Err("no model to serve".into());
        }
        Ok(ModelPool {
            entries,
            config: Some(config),
            used: Mutex::new(0),
        })
    }

    /// Serves `adapters` (name, matrices) beside the first model, which must generate text.
    /// They are attached, and checked against the model, whenever it loads (the first model
    /// loads at start); their bytes count in its footprint.
    pub fn with_adapters(mut self, adapters: Vec<(String, LoraWeights)>) -> Result<Self, String> {
        if adapters.is_empty() {
            return Ok(self);
        }
        let Some(first) = self.entries.first_mut() else {
            return Err("no model to serve".into());
        };
        let Some(entry) = Arc::get_mut(first) else {
            return Err("adapters must be added before the pool is shared".into());
        };
        if entry.kind != ModelKind::Chat || entry.path.is_none() {
            return Err(format!(
                "adapters apply to the first model, and {} is not a text model loaded by the pool",
                entry.name
            ));
        }
        for (name, weights) in adapters {
            crate::adapters::check_name(&name)?;
            if entry.adapters.contains(&name) {
                return Err(format!("two adapters are named {name}"));
            }
            entry.footprint.adapters += weights.bytes();
            entry.adapters.push(name);
            entry.adapter_weights.push(weights);
        }
        Ok(self)
    }

    /// The model clients get when they do not care (the first one).
    pub fn default_name(&self) -> &str {
        self.entries.first().map_or("", |e| e.name.as_str())
    }

    pub fn find(&self, name: &str) -> Result<&Arc<ModelEntry>, ApiError> {
        self.entries
            .iter()
            .find(|e| e.answers_to(name))
            .ok_or_else(|| {
                let names: Vec<&str> = self.entries.iter().map(|e| e.name.as_str()).collect();
                ApiError::model_not_found(name, &names.join("`, `"))
            })
    }

    /// The chat engine of model `name` (see [`ModelPool::runner`]); an embedding model is a
    /// 400 that says so.
    pub async fn engine(
        &self,
        name: &str,
        keep_alive: Option<KeepAlive>,
    ) -> Result<Engine, ApiError> {
        match self.runner(name, keep_alive).await? {
            Runner::Chat(e) => Ok(e),
            Runner::Embed(_) => Err(ApiError::param(
                "model",
                format!(
                    "{name} is an embedding model: it makes vectors (/v1/embeddings, \
                     /api/embed), not text"
                ),
            )),
        }
    }

    /// The embedding engine of model `name` (see [`ModelPool::runner`]); a chat model is a 400
    /// that says so.
    pub async fn embedder(
        &self,
        name: &str,
        keep_alive: Option<KeepAlive>,
    ) -> Result<EmbedEngine, ApiError> {
        let entry = self.find(name)?;
        if entry.kind == ModelKind::Chat {
            return Err(ApiError::param(
                "model",
                format!(
                    "{name} generates text and makes no embeddings; serve an embedding model \
                     (a sentence-transformers folder such as all-MiniLM-L6-v2) beside it"
                ),
            ));
        }
        match self.runner(name, keep_alive).await? {
            Runner::Embed(e) => Ok(e),
            Runner::Chat(_) => Err(ApiError::param(
                "model",
                format!("{name} generates text and makes no embeddings"),
            )),
        }
    }

    /// Model `name`, loading it first if needed: the request that finds it unloaded waits for
    /// the load, others arriving meanwhile get a 503 with `Retry-After`. `keep_alive`
    /// overrides the pool's for this model.
    pub async fn runner(
        &self,
        name: &str,
        keep_alive: Option<KeepAlive>,
    ) -> Result<Runner, ApiError> {
        let entry = self.find(name)?;
        if entry.is_loading() {
            return Err(ApiError::loading(&entry.name));
        }
        let mut slot = entry.slot.lock().await;
        if let Some(l) = slot.as_mut() {
            l.last_used = Instant::now();
            if let Some(k) = keep_alive {
                l.keep_alive = k;
            }
            return Ok(l.runner.clone());
        }
        let (Some(config), Some(path)) = (&self.config, &entry.path) else {
            return Err(ApiError::unavailable(format!(
                "model {} is not loaded",
                entry.name
            )));
        };
        self.reserve(entry).await?;
        entry
            .loading
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let serving = ServingConfig {
            kv_bytes: entry.footprint.kv_cache,
            ..config.serving.clone()
        };
        let context = config.context;
        let path = path.clone();
        let kind = entry.kind;
        let adapters: Vec<(String, LoraWeights)> = entry
            .adapters
            .iter()
            .cloned()
            .zip(entry.adapter_weights.iter().cloned())
            .collect();
        let embed_serving = EmbedServingConfig {
            max_pending: config.serving.max_pending,
            ..EmbedServingConfig::default()
        };
        let started = tokio::task::spawn_blocking(move || {
            let cannot = |e: &dyn std::fmt::Display| format!("cannot load {}: {e}", path.display());
            match kind {
                ModelKind::Chat => {
                    let mut model =
                        LoadedModel::load_cpu(&path, context).map_err(|e| cannot(&e))?;
                    for (name, weights) in &adapters {
                        model.add_adapter(name, weights).map_err(|e| cannot(&e))?;
                    }
                    Engine::start(Arc::new(model), &serving)
                        .map(|(engine, _thread)| Runner::Chat(engine))
                        .map_err(|e| e.to_string())
                }
                ModelKind::Embedding => {
                    let embedder = Embedder::load_cpu(&path).map_err(|e| cannot(&e))?;
                    EmbedEngine::start(Arc::new(embedder), &embed_serving)
                        .map(|(engine, _thread)| Runner::Embed(engine))
                        .map_err(|e| e.to_string())
                }
            }
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r);
        entry
            .loading
            .store(false, std::sync::atomic::Ordering::SeqCst);
        match started {
            Ok(runner) => {
                tracing::info!(model = %entry.name, bytes = entry.footprint.total(), "model loaded");
                *slot = Some(Loaded {
                    runner: runner.clone(),
                    last_used: Instant::now(),
                    keep_alive: keep_alive.unwrap_or(config.keep_alive),
                });
                Ok(runner)
            }
            Err(e) => {
                self.release(entry.footprint.total());
                Err(ApiError::internal(e))
            }
        }
    }

    /// Reserves `entry`'s bytes, unloading idle models (least recently used first) to make
    /// room; refuses with the numbers when even that is not enough.
    async fn reserve(&self, entry: &ModelEntry) -> Result<(), ApiError> {
        let budget = self.config.as_ref().map_or(u64::MAX, |c| c.memory_budget);
        let need = entry.footprint.total();
        loop {
            {
                let mut used = self
                    .used
                    .lock()
                    .map_err(|_| ApiError::internal("pool lock"))?;
                if *used + need <= budget {
                    *used += need;
                    return Ok(());
                }
            }
            if !self.unload_one_idle(&entry.name) {
                let used = self.used.lock().map_or(0, |u| *u);
                let gib = |b: u64| b as f64 / f64::from(1u32 << 30);
                let busy: Vec<String> = self
                    .entries
                    .iter()
                    .filter(|e| e.name != entry.name)
                    .filter_map(|e| {
                        e.loaded()
                            .map(|(runner, _)| format!("{}: {} requests", e.name, runner.pending()))
                    })
                    .collect();
                let f = entry.footprint;
                return Err(ApiError::unavailable(format!(
                    "model {} needs {:.2} GiB (weights {:.2}, KV cache {:.2}, workspace {:.2}{}) \
                     but only {:.2} GiB of the {:.2} GiB budget are free next to the loaded, \
                     busy models ({}); retry when they are idle or raise --memory-limit",
                    entry.name,
                    gib(need),
                    gib(f.weights),
                    gib(f.kv_cache),
                    gib(f.workspace),
                    if f.adapters > 0 {
                        format!(", adapters {:.2}", gib(f.adapters))
                    } else {
                        String::new()
                    },
                    gib(budget.saturating_sub(used)),
                    gib(budget),
                    if busy.is_empty() {
                        "none".to_string()
                    } else {
                        busy.join(", ")
                    },
                )));
            }
        }
    }

    fn release(&self, bytes: u64) {
        if let Ok(mut used) = self.used.lock() {
            *used = used.saturating_sub(bytes);
        }
    }

    /// Unloads the least recently used idle model other than `except`; whether one was.
    fn unload_one_idle(&self, except: &str) -> bool {
        let mut best: Option<(&Arc<ModelEntry>, Instant)> = None;
        for e in &self.entries {
            if e.name == except || e.path.is_none() {
                continue;
            }
            let Ok(slot) = e.slot.try_lock() else {
                continue;
            };
            if let Some(l) = slot.as_ref()
                && l.runner.pending() == 0
                && best.is_none_or(|(_, t)| l.last_used < t)
            {
                best = Some((e, l.last_used));
            }
        }
        match best {
            Some((e, _)) => self.unload(e, |_| true),
            None => false,
        }
    }

    /// Unloads `entry` if it is loaded, idle and `pred` holds; whether it was.
    fn unload(&self, entry: &ModelEntry, pred: impl Fn(&Loaded) -> bool) -> bool {
        let Ok(mut slot) = entry.slot.try_lock() else {
            return false;
        };
        let idle = slot
            .as_ref()
            .is_some_and(|l| l.runner.pending() == 0 && pred(l));
        if idle {
            // The engine thread ends, and its memory is freed, when the last handle is gone.
            *slot = None;
            self.release(entry.footprint.total());
            tracing::info!(model = %entry.name, "model unloaded");
        }
        idle
    }

    /// Unloads every model whose keep-alive has run out; the server calls this periodically.
    pub fn unload_expired(&self) {
        let now = Instant::now();
        for e in &self.entries {
            if e.path.is_some() {
                self.unload(e, |l| match l.keep_alive {
                    KeepAlive::Forever => false,
                    KeepAlive::For(d) => l.last_used + d <= now,
                });
            }
        }
    }
}

/// What an embedding model holds once loaded: its weights in f32 (they are computed in f32
/// whatever the file stores) and the activations of its largest batch (arch's byte math).
fn encoder_footprint(dir: &std::path::Path, card: &ModelCard) -> Result<Footprint, String> {
    let cfg = forja_arch::encoder_config::EncoderConfig::from_dir(dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    if card.parameters == 0 {
        return Err(format!(
            "cannot read the weights of {}: model.safetensors is missing or broken",
            dir.display()
        ));
    }
    Ok(Footprint {
        weights: card.parameters * 4,
        kv_cache: 0,
        workspace: cfg.inference_workspace_bytes(DEFAULT_MAX_BATCH_TOKENS as u64),
        adapters: 0,
        // A WordPiece vocabulary: the token tables without merges.
        tokenizer: TokenizerShape {
            merges: 0,
            ..TokenizerShape::estimated(cfg.vocab_size as u64)
        }
        .heap_bytes(),
        kv_on_gpu: false,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code fails loudly")]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keep_alive_reads_like_ollama() {
        let p = |v| KeepAlive::parse(&v).unwrap();
        assert_eq!(p(json!("5m")), KeepAlive::For(Duration::from_secs(300)));
        assert_eq!(p(json!("30s")), KeepAlive::For(Duration::from_secs(30)));
        assert_eq!(p(json!("1h")), KeepAlive::For(Duration::from_secs(3600)));
        assert_eq!(
            p(json!("250ms")),
            KeepAlive::For(Duration::from_millis(250))
        );
        assert_eq!(p(json!(10)), KeepAlive::For(Duration::from_secs(10)));
        assert_eq!(p(json!(0)), KeepAlive::For(Duration::ZERO));
        assert_eq!(p(json!(-1)), KeepAlive::Forever);
        assert_eq!(p(json!("-1m")), KeepAlive::Forever);
        assert!(KeepAlive::parse(&json!("soon")).is_err());
        assert!(KeepAlive::parse(&json!(true)).is_err());
    }
}
