//! The web chat: its assets and headers over HTTP, and the page itself driven in headless
//! Chromium (Debian's, through playwright-core; both installed by scripts/fetch-testdata) against
//! a live server over the real SmolLM2 model.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{MODEL, load, start};
use forja_engine::serving::ServingConfig;
use forja_server::ServerConfig;
use serde_json::{Value, json};

/// Runs the browser script in `mode`; returns what it printed.
fn browse(args: &[&str]) -> Value {
    let browser = forja_testkit::testdata_dir().join("browser");
    let modules = browser.join("node_modules");
    assert!(
        modules.join("playwright-core").is_dir(),
        "{} is missing: run scripts/fetch-testdata",
        modules.display()
    );
    let script = format!("{}/tests/browser/chat_ui.mjs", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(browser.join("bin/node"))
        .arg(&script)
        .args(args)
        .env("FORJA_BROWSER_MODULES", &modules)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the browser run failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap()
}

#[test]
fn assets_are_served_with_their_types_validators_and_policy() {
    let s = start(load(), ServingConfig::default(), ServerConfig::default());
    s.rt.block_on(async {
        for (path, kind) in [
            ("/", "text/html"),
            ("/ui/app.js", "text/javascript"),
            ("/ui/style.css", "text/css"),
            ("/ui/icon.svg", "image/svg+xml"),
        ] {
            let r = s
                .client
                .get(format!("{}{path}", s.url))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 200, "{path}");
            let h = r.headers().clone();
            assert!(
                h["content-type"].to_str().unwrap().starts_with(kind),
                "{path}"
            );
            assert!(
                h["content-security-policy"]
                    .to_str()
                    .unwrap()
                    .contains("script-src 'self'")
            );
            assert_eq!(h["x-content-type-options"], "nosniff");
            let tag = h["etag"].to_str().unwrap().to_string();
            let body = r.bytes().await.unwrap();
            assert!(!body.is_empty());
            // A browser holding the current version gets 304 without the body.
            let again = s
                .client
                .get(format!("{}{path}", s.url))
                .header("if-none-match", &tag)
                .send()
                .await
                .unwrap();
            assert_eq!(again.status().as_u16(), 304, "{path}");
            assert!(again.bytes().await.unwrap().is_empty());
        }
        let page = s
            .client
            .get(&s.url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        for asset in ["/ui/app.js", "/ui/style.css", "/ui/icon.svg"] {
            assert!(page.contains(asset), "index.html does not load {asset}");
        }
        let missing = s
            .client
            .get(format!("{}/ui/secret.txt", s.url))
            .send()
            .await
            .unwrap();
        assert_eq!(missing.status().as_u16(), 404);
    });
}

#[test]
fn chat_in_a_real_browser() {
    // A chat model and an embedding model: the page offers only the first.
    let paths = [
        forja_testkit::testdata_file(MODEL),
        forja_testkit::testdata_dir().join("all-minilm-l6-v2"),
    ];
    let s = common::start_paths(&paths);
    let prompt = "Name three colors.";
    // What the API answers to the request the page will make (greedy, seeded).
    let (status, body) = s.post(
        "/v1/chat/completions",
        &json!({"model": MODEL, "messages": [{"role": "user", "content": prompt}],
                "temperature": 0, "top_p": 1, "max_tokens": 24, "seed": 1}),
    );
    assert_eq!(status, 200, "{body}");
    let expected = json!({
        "content": body["choices"][0]["message"]["content"],
        "completion_tokens": body["usage"]["completion_tokens"],
        "max_tokens": 24,
    });
    let shot: PathBuf = std::env::temp_dir().join(format!("forja-ui-{}.png", std::process::id()));
    let seen = browse(&[
        "chat",
        &format!("{}/", s.url),
        MODEL,
        prompt,
        &expected.to_string(),
        shot.to_str().unwrap(),
    ]);
    assert_eq!(seen["first_answer"], expected["content"]);
    assert!(!seen["rendered"].as_str().unwrap().trim().is_empty());
    assert!(seen["stopped_chars"].as_u64().unwrap() > 0);
    assert!(std::fs::metadata(&shot).unwrap().len() > 1000);
    // FORJA_KEEP_SCREENSHOT=1 keeps the page's picture for a look.
    if std::env::var_os("FORJA_KEEP_SCREENSHOT").is_none() {
        let _ = std::fs::remove_file(&shot);
    } else {
        eprintln!("screenshot: {}", shot.display());
    }
    // The stopped reply's sequence was dropped: nothing runs and no KV block is held.
    assert_eq!(s.wait_for_metric("forja_engine_pending_requests", 0.0), 0.0);
    assert_eq!(s.wait_for_metric("forja_kv_blocks_used", 0.0), 0.0);
}

#[test]
fn the_page_asks_for_the_key_when_the_server_has_one() {
    let key = "forja-ui-key";
    let s = start(
        load(),
        ServingConfig::default(),
        ServerConfig {
            api_key: Some(key.into()),
            ..Default::default()
        },
    );
    let seen = browse(&["auth", &format!("{}/", s.url), MODEL, key]);
    assert!(seen["without_key"].as_str().unwrap().contains("API key"));
    assert!(!seen["answer"].as_str().unwrap().is_empty());
}

#[test]
fn documents_panel_in_a_real_browser() {
    let store = tempfile::tempdir().unwrap();
    let (engine, _thread) =
        forja_engine::serving::Engine::start(load(), &ServingConfig::default()).unwrap();
    let state = forja_server::AppState::with_pool(
        forja_server::models::ModelPool::preloaded(engine),
        ServerConfig::default(),
    )
    .with_rag(forja_server::rag::RagConfig {
        store: store.path().join("rag.sqlite").display().to_string(),
        embedding_model: Ok(forja_testkit::testdata_dir().join("all-minilm-l6-v2")),
        max_upload_bytes: 1 << 20,
        rerank_model: None,
    });
    let s = common::start_state(state);
    let docx = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/documents/memo.docx");
    let seen = browse(&[
        "documents",
        &format!("{}/", s.url),
        MODEL,
        docx.to_str().unwrap(),
    ]);
    assert!(
        seen["citations"][0].as_str().is_some(),
        "no citation shown: {seen}"
    );
    // What the page showed is what the store holds.
    let list = s.get("/v1/rag/collections");
    assert_eq!(list["data"][0]["name"], "handbook");
    assert_eq!(list["data"][0]["documents"], 2);
}
