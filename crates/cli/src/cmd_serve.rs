//! `forja serve MODEL`: the OpenAI-compatible HTTP API over the engine actor.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Args;
use forja_engine::serving::ServingConfig;
use forja_engine::{DeviceWeights, RunnerDevice};
use forja_server::models::{KeepAlive, ModelPool, PoolConfig, Runner};
use forja_server::rag::RagConfig;
use forja_server::{AppState, ServerConfig};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// .gguf files or HF model folders (chat models, or sentence-transformers embedding models such
    /// as all-MiniLM-L6-v2), store names, hub names (hf:org/repo:q4_k_m) or catalog names; the
    /// first is loaded at start, the others on first use; models not in the store are pulled
    #[arg(required = true)]
    models: Vec<String>,
    /// Address to listen on (loopback by default; any other address needs an API key)
    #[arg(long, default_value = "127.0.0.1", env = "FORJA_HOST")]
    host: IpAddr,
    /// Port to listen on (0 picks a free one)
    #[arg(long, default_value_t = 8080, env = "FORJA_PORT")]
    port: u16,
    /// Require `Authorization: Bearer KEY` on every route but /health
    #[arg(long, env = "FORJA_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Listen on a non-loopback address without an API key
    #[arg(long)]
    insecure_no_auth: bool,
    /// Context length in tokens (default: the model's own)
    #[arg(long)]
    ctx: Option<u64>,
    /// KV cache pool, e.g. 2GiB or 512MiB (default: room for two full contexts, between 16k and
    /// 64k tokens, at most a quarter of available memory)
    #[arg(long, value_parser = parse_size)]
    kv_memory: Option<u64>,
    /// Tokens per KV cache block (the planner prices `forja serve`'s pool at the default)
    #[arg(long, default_value_t = forja_arch::kv_cache::SERVE_BLOCK_SIZE as usize)]
    block_size: usize,
    /// Where chat models run: cpu, or an NVIDIA GPU as cuda / cuda:N (a build with the `cuda`
    /// feature); on a GPU the KV cache asks for room for 512k tokens unless --kv-memory says
    /// otherwise, and keeps as many blocks as fit beside the weights
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    device: RunnerDevice,
    /// On a GPU: `stored` keeps a GGUF's blocks as the file has them (every block type, Q2_K to
    /// Q8_0; F32/BF16 matrices in f16) — the memory `forja plan` prices, faster at 1 and 16
    /// concurrent requests (measured on an H200); `f16` dequantizes every matrix (about 3× the
    /// memory of Q4_K_M, faster when 64 sequences decode together)
    /// [default: stored]
    #[arg(long, value_name = "stored|f16")]
    gpu_weights: Option<DeviceWeights>,
    /// Tokens computed per engine step (prefill chunks and decodes together)
    #[arg(long, default_value_t = 512)]
    max_batched_tokens: usize,
    /// Sequences per engine step
    #[arg(long, default_value_t = 64)]
    max_running: usize,
    /// Requests queued or running before new ones get 429
    #[arg(long, default_value_t = 256)]
    max_pending: usize,
    /// Allow browser requests from this origin (repeatable; CORS is off without it)
    #[arg(long = "cors-origin")]
    cors_origins: Vec<String>,
    /// Largest request body in bytes
    #[arg(long, default_value_t = 8 << 20)]
    max_body: usize,
    /// Unload a model this long after its last request, e.g. 5m, 30s, -1 = never (default:
    /// never with one model, 5m with several)
    #[arg(long, value_parser = parse_keep_alive)]
    keep_alive: Option<KeepAlive>,
    /// Memory all loaded models together may use, e.g. 8GiB (default: 90% of what is
    /// available at start); a model that does not fit next to busy ones is refused
    #[arg(long, value_parser = parse_size)]
    memory_limit: Option<u64>,
    /// The document store behind /v1/rag/… and chat with `retrieval`: a SQLite file, or a
    /// PostgreSQL server with pgvector as postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE
    /// (the same store `forja ingest` writes) [default: $FORJA_HOME/rag.sqlite, opened on first
    /// use]
    #[arg(long, value_name = "FILE|URL", env = "FORJA_RAG_STORE")]
    rag_store: Option<String>,
    /// The embedding model of uploads and searches (sentence-transformers folder), loaded once on
    /// first use [default: all-minilm-l6-v2 where scripts/quickstart puts it]
    #[arg(long, value_name = "DIR")]
    embedding_model: Option<std::path::PathBuf>,
    /// Largest uploaded document, e.g. 64MiB; larger ones are refused with 413 (a request may
    /// carry four of them)
    #[arg(long, value_parser = parse_size, default_value = "64MiB")]
    max_upload: u64,
    /// A cross-encoder (HF folder of a `…ForSequenceClassification` reranker, e.g.
    /// cross-encoder/ms-marco-MiniLM-L-6-v2) for searches and retrieval that ask for
    /// "rerank": true; loaded on first use
    #[arg(long, value_name = "DIR")]
    rerank_model: Option<std::path::PathBuf>,
    /// Serve a LoRA adapter (a PEFT folder, e.g. from `forja tune`) beside the first model as
    /// NAME: requests pick it with "model": "MODEL+NAME" or "adapter": "NAME" (repeatable;
    /// requests for different adapters share batches)
    #[arg(long = "adapter", value_name = "NAME=DIR", value_parser = parse_adapter)]
    adapters: Vec<(String, std::path::PathBuf)>,
}

/// `NAME=DIR` of `--adapter`.
fn parse_adapter(s: &str) -> std::result::Result<(String, std::path::PathBuf), String> {
    let (name, dir) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not NAME=DIR (example: --adapter sql=./sql-adapter)"))?;
    forja_server::adapters::check_name(name)?;
    if dir.is_empty() {
        return Err(format!("`{s}` names no adapter folder"));
    }
    Ok((name.to_string(), std::path::PathBuf::from(dir)))
}

fn parse_keep_alive(s: &str) -> std::result::Result<KeepAlive, String> {
    let v = match s.trim().parse::<f64>() {
        Ok(n) => serde_json::json!(n),
        Err(_) => serde_json::json!(s),
    };
    KeepAlive::parse(&v)
}

/// `2GiB`, `512MiB`, `1.5G`, `1000000` → bytes.
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size (examples: 2GiB, 512MiB)"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        other => return Err(format!("unknown size unit `{other}` in `{s}`")),
    };
    let bytes = n * mult;
    if !(bytes.is_finite() && bytes >= 1.0) {
        return Err(format!("`{s}` is not a positive size"));
    }
    Ok(bytes as u64)
}

/// What `--gpu-weights` asks for on `device`: refused without a GPU, where it would change
/// nothing.
pub fn gpu_weights(device: RunnerDevice, asked: Option<DeviceWeights>) -> Result<DeviceWeights> {
    match (device, asked) {
        (RunnerDevice::Cpu, Some(w)) => bail!(
            "--gpu-weights {w} is for a GPU: add --device cuda, or drop it (the CPU always reads \
             GGUF blocks as stored)"
        ),
        (_, w) => Ok(w.unwrap_or_default()),
    }
}

pub fn run(a: ServeArgs) -> Result<()> {
    let weights = gpu_weights(a.device, a.gpu_weights)?;
    if !a.host.is_loopback() && a.api_key.is_none() && !a.insecure_no_auth {
        bail!(
            "listening on {} exposes the model to the network: set --api-key (or FORJA_API_KEY), \
             or pass --insecure-no-auth to allow anyone who can reach it",
            a.host
        );
    }
    let available = forja_hw::memory::probe().available_bytes;
    let keep_alive = a.keep_alive.unwrap_or(if a.models.len() == 1 {
        KeepAlive::Forever
    } else {
        KeepAlive::For(std::time::Duration::from_secs(300))
    });
    let models = a
        .models
        .iter()
        .map(|m| crate::model_arg::local_model(m))
        .collect::<Result<Vec<_>>>()?;
    let pool = ModelPool::from_named_paths(
        &models,
        PoolConfig {
            serving: ServingConfig {
                block_size: a.block_size,
                kv_bytes: 0,
                max_batched_tokens: a.max_batched_tokens,
                max_running: a.max_running,
                max_pending: a.max_pending,
                device: a.device,
                weights,
            },
            kv_bytes: a.kv_memory,
            context: a.ctx,
            keep_alive,
            memory_budget: a
                .memory_limit
                .or(available.map(|b| b / 10 * 9))
                .unwrap_or(u64::MAX),
            available_memory: available,
        },
    )
    .map_err(anyhow::Error::msg)?;
    // Read once; attached (and checked against the model) whenever the first model loads.
    let adapters = a
        .adapters
        .iter()
        .map(|(name, dir)| {
            let adapter = forja_train::peft::load(dir)?;
            Ok((name.clone(), adapter.weights()))
        })
        .collect::<Result<Vec<_>>>()?;
    let pool = pool.with_adapters(adapters).map_err(anyhow::Error::msg)?;
    let rag = RagConfig {
        store: crate::rag_setup::store_location(a.rag_store.as_deref()),
        embedding_model: crate::rag_setup::embedding_model_dir(a.embedding_model.as_deref())
            .map_err(|e| format!("{e:#}")),
        max_upload_bytes: usize::try_from(a.max_upload).unwrap_or(usize::MAX),
        rerank_model: a.rerank_model.clone(),
    };
    if let Some(dir) = &a.rerank_model
        && !forja_engine::is_reranker_dir(dir)
    {
        bail!(
            "--rerank-model {}: not a cross-encoder (its config.json names no \
             …ForSequenceClassification architecture)",
            dir.display()
        );
    }
    if let Err(why) = &rag.embedding_model
        && a.embedding_model.is_some()
    {
        bail!("{why}");
    }
    let state = Arc::new(
        AppState::with_pool(
            pool,
            ServerConfig {
                api_key: a.api_key.clone(),
                max_body_bytes: a.max_body,
                cors_origins: a.cors_origins.clone(),
            },
        )
        .with_rag(rag),
    );
    if let Some(r) = &state.rag {
        let store = if forja_rag::is_postgres_url(&r.config.store) {
            forja_rag::store::postgres::redact_url(&r.config.store)
        } else {
            r.config.store.clone()
        };
        match &r.config.embedding_model {
            Ok(dir) => eprintln!(
                "documents (/v1/rag): {store}, embedded with {}",
                dir.display()
            ),
            Err(why) => {
                eprintln!("documents (/v1/rag): {store}; uploads and vector search are off: {why}")
            }
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let addr = SocketAddr::new(a.host, a.port);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let local = listener.local_addr()?;
        let first = state.models.default_name().to_string();
        eprintln!(
            "serving at http://{local}/v1 (OpenAI API) and /api (Ollama API){}; web chat at \
             http://{local}/; loading {first} …",
            if a.api_key.is_some() {
                "; send Authorization: Bearer <key>"
            } else {
                ""
            }
        );
        // Load the default model while already answering (503 until it is ready).
        let (failed_tx, failed_rx) = tokio::sync::oneshot::channel::<String>();
        let loader = Arc::clone(&state);
        tokio::spawn(async move {
            match loader.models.runner(&first, None).await {
                Ok(runner) => report_ready(&loader, &runner),
                Err(e) => {
                    let _ = failed_tx.send(e.message);
                }
            }
        });
        let failure = Arc::new(std::sync::Mutex::new(None));
        let seen = Arc::clone(&failure);
        forja_server::serve(listener, state, async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                Ok(message) = failed_rx => {
                    if let Ok(mut f) = seen.lock() {
                        *f = Some(message);
                    }
                }
            }
        })
        .await
        .context("the server failed")?;
        match failure.lock().ok().and_then(|mut f| f.take()) {
            Some(message) => bail!("{message}"),
            None => Ok(()),
        }
    })
}

/// Prints (and logs) what the default model holds and the other models on offer.
fn report_ready(state: &AppState, runner: &Runner) {
    match runner {
        Runner::Chat(engine) => report_pool(&engine.pool, engine.device()),
        Runner::Embed(e) => eprintln!(
            "ready: embedding model, {}-dimensional vectors, inputs up to {} tokens",
            e.embedder.dimension(),
            e.embedder.max_tokens()
        ),
    }
    if let Some(first) = state.models.entries.first() {
        for a in &first.adapters {
            eprintln!(
                "adapter {a}: requests with \"model\": \"{}\"",
                forja_server::adapters::listed_name(first, a)
            );
        }
    }
    for e in state.models.entries.iter().skip(1) {
        eprintln!(
            "also serving {} on first use ({:.2} GiB when loaded)",
            e.name,
            e.footprint.total() as f64 / f64::from(1u32 << 30)
        );
    }
}

pub(crate) fn parse_device(s: &str) -> std::result::Result<RunnerDevice, String> {
    s.parse()
}

/// Prints (and logs) a chat model's KV pool.
fn report_pool(p: &forja_engine::serving::PoolInfo, device: &str) {
    tracing::info!(
        device,
        num_blocks = p.num_blocks,
        block_size = p.block_size,
        groups = p.groups,
        bytes = p.bytes,
        bytes_per_token = p.bytes_per_token,
        max_model_len = p.max_model_len,
        "kv cache ready"
    );
    let on = if device == "cpu" {
        String::new()
    } else {
        format!(" on {device}")
    };
    let groups = if p.groups > 1 {
        format!(
            " in {} layer groups (sliding-window layers give back what leaves their window)",
            p.groups
        )
    } else {
        String::new()
    };
    eprintln!(
        "ready{on}: KV cache {} blocks × {} tokens{groups} = {:.2} GiB ({:.0} bytes/token while \
         every layer keeps it); longest request {} tokens",
        p.num_blocks,
        p.block_size,
        p.bytes as f64 / f64::from(1u32 << 30),
        p.bytes_per_token,
        p.max_model_len
    );
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code fails loudly")]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("1.5G").unwrap(), 1_500_000_000);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("2XB").is_err());
        assert!(parse_size("0").is_err());
    }

    #[test]
    fn adapters_parse() {
        let (name, dir) = parse_adapter("sql=./out/sql").unwrap();
        assert_eq!(name, "sql");
        assert_eq!(dir, std::path::PathBuf::from("./out/sql"));
        assert!(parse_adapter("./out/sql").is_err());
        assert!(parse_adapter("a+b=./x").is_err());
        assert!(parse_adapter("=./x").is_err());
        assert!(parse_adapter("sql=").is_err());
    }
}
