//! Several models behind one server: loaded on first use, idle ones unloaded to make room, a
//! model that does not fit next to a busy one refused with the numbers, keep-alive expiry, and
//! `/api/ps`, `/api/tags`, `/v1/models` telling which is which.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

mod common;

use std::time::{Duration, Instant};

use common::{MODEL, start_pool};
use forja_engine::serving::ServingConfig;
use forja_server::ServerConfig;
use forja_server::models::{KeepAlive, ModelPool, PoolConfig};
use serde_json::{Value, json};

const QWEN: &str = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf";

fn pool(budget: u64, keep_alive: KeepAlive) -> ModelPool {
    pool_with_kv(budget, keep_alive, 64 << 20)
}

fn pool_with_kv(budget: u64, keep_alive: KeepAlive, kv_bytes: u64) -> ModelPool {
    let paths = [
        forja_testkit::testdata_file(MODEL),
        forja_testkit::testdata_file(QWEN),
    ];
    ModelPool::from_paths(
        &paths,
        PoolConfig {
            serving: ServingConfig::default(),
            kv_bytes: Some(kv_bytes),
            context: None,
            keep_alive,
            memory_budget: budget,
            available_memory: None,
        },
    )
    .unwrap()
}

fn loaded(s: &common::Server) -> Vec<String> {
    s.get("/api/ps")["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_string())
        .collect()
}

fn ask(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4,
           "temperature": 0})
}

#[test]
fn models_load_on_first_use_and_make_room_for_each_other() {
    let sizes: Vec<u64> = pool(u64::MAX, KeepAlive::Forever)
        .entries
        .iter()
        .map(|e| e.footprint.total())
        .collect();
    // Room for either model, never both.
    let budget = sizes.iter().max().unwrap() + sizes.iter().min().unwrap() / 2;
    let s = start_pool(pool(budget, KeepAlive::Forever), ServerConfig::default());
    assert!(loaded(&s).is_empty());
    let tags = s.get("/api/tags");
    assert_eq!(tags["models"].as_array().unwrap().len(), 2);
    let listed = s.get("/v1/models");
    assert_eq!(listed["data"][1]["id"], QWEN);

    let (status, v) = s.post("/v1/chat/completions", &ask(MODEL));
    assert_eq!(status, 200, "{v}");
    assert_eq!(loaded(&s), vec![MODEL]);
    // The other model pushes the idle one out.
    let (status, v) = s.post("/v1/chat/completions", &ask(QWEN));
    assert_eq!(status, 200, "{v}");
    assert_eq!(loaded(&s), vec![QWEN]);

    // While Qwen is busy, SmolLM2 cannot fit next to it: a 503 that says why.
    let (busy, refused) = s.rt.block_on(async {
        let client = s.client.clone();
        let url = format!("{}/v1/chat/completions", s.url);
        let long = json!({"model": QWEN, "messages": [{"role": "user", "content": "Count to 100."}],
                          "max_tokens": 60, "temperature": 0});
        let busy = tokio::spawn(async move {
            client
                .post(url)
                .json(&long)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        });
        // Wait until the long request is running.
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let text = s
                .client
                .get(format!("{}/metrics", s.url))
                .send()
                .await
                .unwrap();
            let text = text.text().await.unwrap();
            if text
                .lines()
                .any(|l| l.starts_with("forja_engine_pending_requests{") && !l.ends_with(" 0"))
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let r = s
            .client
            .post(format!("{}/v1/chat/completions", s.url))
            .json(&ask(MODEL))
            .send()
            .await
            .unwrap();
        let refused = (r.status().as_u16(), r.json::<Value>().await.unwrap());
        (busy.await.unwrap(), refused)
    });
    assert_eq!(busy, 200);
    assert_eq!(refused.0, 503, "{}", refused.1);
    let msg = refused.1["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains(MODEL) && msg.contains("GiB") && msg.contains(QWEN),
        "{msg}"
    );

    let (status, v) = s.post("/v1/chat/completions", &ask("nope"));
    assert_eq!(status, 404);
    assert!(
        v["error"]["message"].as_str().unwrap().contains(QWEN),
        "{v}"
    );
}

#[test]
fn a_model_larger_than_the_budget_is_refused_and_keep_alive_unloads() {
    let s = start_pool(pool(1 << 20, KeepAlive::Forever), ServerConfig::default());
    let (status, v) = s.post("/v1/chat/completions", &ask(MODEL));
    assert_eq!(status, 503, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("needs"),
        "{v}"
    );

    let s = start_pool(pool(u64::MAX, KeepAlive::Forever), ServerConfig::default());
    // Ollama's keep_alive 0: unloaded as soon as it is idle.
    let body = json!({"model": MODEL, "messages": [{"role": "user", "content": "Hi"}],
                      "stream": false, "keep_alive": 0, "options": {"num_predict": 2}});
    let (status, v) = s.post("/api/chat", &body);
    assert_eq!(status, 200, "{v}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !loaded(&s).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(loaded(&s).is_empty(), "still loaded: {:?}", loaded(&s));
    // A model kept forever stays.
    let body = json!({"model": MODEL, "prompt": "Hi", "stream": false, "keep_alive": "-1",
                      "options": {"num_predict": 2}});
    let (status, v) = s.post("/api/generate", &body);
    assert_eq!(status, 200, "{v}");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(loaded(&s), vec![MODEL]);
    let ps = s.get("/api/ps");
    assert_eq!(ps["models"][0]["expires_at"], "9999-12-31T23:59:59Z");
}

#[test]
fn requests_during_a_load_get_503_with_retry_after() {
    // A 1 GiB KV pool takes long enough to allocate that the load can be caught in progress.
    let s = start_pool(
        pool_with_kv(u64::MAX, KeepAlive::Forever, 1 << 30),
        ServerConfig::default(),
    );
    let (first, during, health) = s.rt.block_on(async {
        let client = s.client.clone();
        let url = format!("{}/v1/chat/completions", s.url);
        let first = tokio::spawn(async move {
            client
                .post(url)
                .json(&ask(QWEN))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        });
        // Wait until the load has started.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let h: Value = s
                .client
                .get(format!("{}/health", s.url))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if h["loading"].as_array().is_some_and(|l| !l.is_empty()) || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let r = s
            .client
            .post(format!("{}/v1/chat/completions", s.url))
            .json(&ask(QWEN))
            .send()
            .await
            .unwrap();
        let retry = r
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string());
        let during = (r.status().as_u16(), retry, r.json::<Value>().await.unwrap());
        let health = s
            .client
            .get(format!("{}/health", s.url))
            .send()
            .await
            .unwrap();
        (first.await.unwrap(), during, health.status().as_u16())
    });
    assert_eq!(first, 200);
    assert_eq!(during.0, 503, "{}", during.2);
    assert_eq!(during.1.as_deref(), Some("2"));
    assert_eq!(during.2["error"]["code"], "model_loading");
    // Qwen is not the default model: the server stays healthy while it loads.
    assert_eq!(health, 200);
}
