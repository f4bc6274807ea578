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
    pub model: Arc<LoadedModel>,
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
    let state = Arc::new(AppState::new(engine, config));
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
        model,
        rt,
    }
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
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")))
                .unwrap_or_else(|| panic!("no metric {name} in\n{text}"))
                .parse()
                .unwrap()
        })
    }
}

pub fn sse_data(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(str::to_string)
        .collect()
}
