//! A live server on a real socket over the real SmolLM2 model, and small HTTP helpers.

#![allow(dead_code, reason = "each test file uses a different part")]

use std::sync::Arc;

use candle_core::Device;
use forja_engine::LoadedModel;
use forja_engine::serving::{Engine, ServingConfig};
use forja_server::{AppState, ServerConfig};
use serde_json::Value;

pub const MODEL: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

pub struct Server {
    pub url: String,
    pub client: reqwest::Client,
    pub rt: tokio::runtime::Runtime,
}

pub fn load_named(name: &str) -> Arc<LoadedModel> {
    Arc::new(LoadedModel::load(&forja_testkit::testdata_file(name), &Device::Cpu).unwrap())
}

pub fn load() -> Arc<LoadedModel> {
    Arc::new(LoadedModel::load(&forja_testkit::testdata_file(MODEL), &Device::Cpu).unwrap())
}

pub fn start(model: Arc<LoadedModel>, serving: ServingConfig, config: ServerConfig) -> Server {
    let (engine, _thread) = Engine::start(Arc::clone(&model), &serving).unwrap();
    start_pool(forja_server::models::ModelPool::preloaded(engine), config)
}

impl Server {
    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.rt.block_on(async {
            let r = self
                .client
                .post(format!("{}{path}", self.url))
                .json(body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json().await.unwrap())
        })
    }

    pub fn raw(&self, path: &str, body: &str) -> (u16, Value) {
        self.rt.block_on(async {
            let r = self
                .client
                .post(format!("{}{path}", self.url))
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json().await.unwrap())
        })
    }

    /// The `data:` payloads of a streamed response.
    pub fn stream(&self, path: &str, body: &Value) -> Vec<String> {
        self.rt.block_on(async {
            let r = self
                .client
                .post(format!("{}{path}", self.url))
                .json(body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 200);
            let text = r.text().await.unwrap();
            sse_data(&text)
        })
    }

    /// Metric `name` once it equals `want`, or its last value after 5 s.
    pub fn wait_for_metric(&self, name: &str, want: f64) -> f64 {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let v = self.metric(name);
            if v == want || std::time::Instant::now() > deadline {
                return v;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// The sum of metric `name` over its label sets.
    pub fn metric(&self, name: &str) -> f64 {
        self.rt.block_on(async {
            let text = self
                .client
                .get(format!("{}/metrics", self.url))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let values: Vec<f64> = text
                .lines()
                .filter(|l| {
                    l.strip_prefix(name)
                        .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
                })
                .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
                .collect();
            assert!(!values.is_empty(), "no metric {name} in\n{text}");
            values.iter().sum()
        })
    }
}

pub fn sse_data(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(str::to_string)
        .collect()
}

/// A server over a pool of models (loaded on first use), on a real socket.
pub fn start_pool(pool: forja_server::models::ModelPool, config: ServerConfig) -> Server {
    start_state(AppState::with_pool(pool, config))
}

/// A server of `state` on a real socket.
pub fn start_state(state: AppState) -> Server {
    let state = Arc::new(state);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    rt.spawn(forja_server::serve(listener, state, std::future::pending()));
    Server {
        url,
        client: reqwest::Client::new(),
        rt,
    }
}

impl Server {
    pub fn get(&self, path: &str) -> Value {
        self.rt.block_on(async {
            self.client
                .get(format!("{}{path}", self.url))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap()
        })
    }
}

/// A server over a pool of the models at `paths` (loaded on first use, never unloaded), with no
/// API key.
pub fn start_paths(paths: &[std::path::PathBuf]) -> Server {
    let pool = forja_server::models::ModelPool::from_paths(
        paths,
        forja_server::models::PoolConfig {
            serving: forja_engine::serving::ServingConfig::default(),
            kv_bytes: Some(64 << 20),
            context: None,
            keep_alive: forja_server::models::KeepAlive::Forever,
            memory_budget: 8 << 30,
            available_memory: None,
        },
    )
    .unwrap();
    start_pool(pool, ServerConfig::default())
}
