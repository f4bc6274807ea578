//! The official OpenAI and Ollama Python clients (pinned in scripts/clients/requirements.txt,
//! installed by scripts/fetch-testdata) against a live server: each script checks what the
//! client parsed and prints it; the answers must agree across routes and clients.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

mod common;

use std::process::Command;

use common::{MODEL, load, load_named, start};
use forja_engine::serving::ServingConfig;
use forja_server::ServerConfig;
use serde_json::Value;

fn run_client(script: &str, url: &str) -> Value {
    run_client_for(script, url, MODEL)
}

fn run_client_for(script: &str, url: &str, model: &str) -> Value {
    let python = forja_testkit::testdata_dir().join("pyclients/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run scripts/fetch-testdata",
        python.display()
    );
    let path = format!("{}/tests/clients/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(&python)
        .args([path.as_str(), url, model])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{script} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap()
}

#[test]
fn openai_and_ollama_clients_work_and_agree() {
    let s = start(
        load(),
        ServingConfig::default(),
        ServerConfig {
            api_key: Some("forja-test-key".into()),
            ..Default::default()
        },
    );
    let openai = run_client("openai_client.py", &s.url);
    assert!(!openai["chat"].as_str().unwrap().is_empty());
    assert_eq!(openai["n_choices"], 3);
    assert_eq!(openai["errors"], "ok");
    // The Ollama client sends no key: a server without one.
    let s2 = start(load(), ServingConfig::default(), ServerConfig::default());
    let ollama = run_client("ollama_client.py", &s2.url);
    assert_eq!(ollama["family"], "llama");
    assert_eq!(ollama["errors"], "ok");
    // Greedy answers to the same question agree across APIs.
    assert_eq!(ollama["chat"], openai["chat"]);
}

#[test]
fn tool_calls_round_trip_through_the_openai_client() {
    let qwen = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf";
    let s = start(
        load_named(qwen),
        ServingConfig::default(),
        ServerConfig::default(),
    );
    let seen = run_client_for("openai_tools.py", &s.url, qwen);
    let name = seen["required"]["name"].as_str().unwrap();
    assert!(name == "get_weather" || name == "get_time", "{seen}");
}

#[test]
fn embeddings_through_the_openai_and_ollama_clients() {
    let minilm = "all-minilm-l6-v2";
    let s = common::start_paths(&[forja_testkit::testdata_dir().join(minilm)]);
    let seen = run_client_for("embeddings_client.py", &s.url, minilm);
    assert_eq!(seen["errors"], "ok");
    let golden = forja_testkit::vectors::minilm_goldens();
    let close = |a: &[f32], b: &[f32]| {
        let d = forja_testkit::vectors::max_abs_diff(a, b);
        assert!(d <= 1e-5, "max |Δ| {d}");
    };
    let floats = forja_testkit::vectors::floats;
    // Sentences 0 and 3 of the goldens are the script's two texts.
    for (i, g) in [(0, 0), (1, 3)] {
        let reference = floats(&golden["sentences"][g]["embedding"]);
        close(&floats(&seen["openai"][i]), &reference);
        close(&floats(&seen["ollama"][i]), &reference);
    }
    close(&floats(&seen["openai_float"]), &floats(&seen["openai"][0]));
    close(&floats(&seen["ollama_legacy"]), &floats(&seen["openai"][0]));
}

#[test]
fn the_openapi_document_is_valid_and_lists_every_route() {
    let s = start(load(), ServingConfig::default(), ServerConfig::default());
    let python = forja_testkit::testdata_dir().join("pyclients/bin/python");
    let script = format!(
        "{}/tests/clients/check_openapi.py",
        env!("CARGO_MANIFEST_DIR")
    );
    let out = Command::new(&python)
        .args([script.as_str(), &s.url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        seen["openapi"].as_str().unwrap().starts_with("3.1"),
        "{seen}"
    );
    let paths: Vec<&str> = seen["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    // Every route the router serves (but the document itself) is documented.
    let routes = forja_server::ROUTES;
    for r in routes {
        if *r != "/openapi.json" {
            assert!(paths.contains(r), "{r} missing from {paths:?}");
        }
    }
    assert_eq!(paths.len(), routes.len() - 1, "{paths:?}");
    // And every listed route is served (the fallback answers `no route …`).
    s.rt.block_on(async {
        for r in routes {
            let url = format!("{}{r}", s.url);
            let get = s.client.get(&url).send().await.unwrap();
            let text = if get.status().as_u16() == 405 {
                let post = s.client.post(&url).body("{}").send().await.unwrap();
                post.text().await.unwrap()
            } else {
                get.text().await.unwrap()
            };
            assert!(!text.contains("no route"), "{r} is not served: {text}");
        }
    });
}
