//! Embeddings over HTTP: a server of SmolLM2 (chat) and all-MiniLM-L6-v2 (embeddings), checked
//! against the vectors sentence-transformers' recipe gives with transformers
//! (fixtures/goldens/minilm.json), on the OpenAI and Ollama routes, with their errors.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

mod common;

use common::MODEL;
use forja_testkit::vectors::{cosine, floats, max_abs_diff, minilm_goldens};
use serde_json::{Value, json};

const MINILM: &str = "all-minilm-l6-v2";

fn server() -> common::Server {
    let paths = [
        forja_testkit::testdata_dir().join(MINILM),
        forja_testkit::testdata_file(MODEL),
    ];
    common::start_paths(&paths)
}

/// Standard base64 decoding, for checking `encoding_format: "base64"`.
fn unbase64(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let mut out = Vec::new();
    for chunk in s.as_bytes().chunks(4) {
        let pad = chunk.iter().filter(|&&c| c == b'=').count();
        let n = chunk
            .iter()
            .map(|&c| if c == b'=' { 0 } else { val(c) })
            .fold(0u32, |n, v| (n << 6) | v);
        out.extend_from_slice(&n.to_be_bytes()[1..4 - pad]);
    }
    out
}

#[test]
fn openai_embeddings_match_the_reference() {
    let s = server();
    let g = minilm_goldens();
    let sentences = g["sentences"].as_array().unwrap();
    let texts: Vec<&str> = sentences
        .iter()
        .map(|x| x["text"].as_str().unwrap())
        .collect();
    let (status, body) = s.post("/v1/embeddings", &json!({"model": MINILM, "input": texts}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "list");
    assert_eq!(body["model"], MINILM);
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), texts.len());
    for (i, (d, golden)) in data.iter().zip(sentences).enumerate() {
        assert_eq!(d["index"], i);
        assert_eq!(d["object"], "embedding");
        let v = floats(&d["embedding"]);
        assert_eq!(v.len(), 384);
        let c = cosine(&v, &floats(&golden["embedding"]));
        assert!(c >= 0.9999, "{}: cosine {c}", texts[i]);
    }
    let tokens: usize = sentences
        .iter()
        .map(|x| x["ids"].as_array().unwrap().len())
        .sum();
    assert_eq!(body["usage"]["prompt_tokens"], tokens);
    assert_eq!(body["usage"]["total_tokens"], tokens);

    // One string, and base64 of the same floats.
    let one = |extra: Value| {
        let mut req = json!({"model": MINILM, "input": texts[0]});
        req.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let (status, body) = s.post("/v1/embeddings", &req);
        assert_eq!(status, 200, "{body}");
        body["data"][0]["embedding"].clone()
    };
    let plain = floats(&one(json!({})));
    assert!(max_abs_diff(&plain, &floats(&data[0]["embedding"])) <= 1e-5);
    let b64 = one(json!({"encoding_format": "base64", "dimensions": 384}));
    let bytes = unbase64(b64.as_str().unwrap());
    let decoded: Vec<f32> = bytes
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(decoded, plain);
    assert!(s.metric("forja_tokens_prompt_total") >= tokens as f64);
}

#[test]
fn bad_embedding_requests_say_what_is_wrong() {
    let s = server();
    let long = minilm_goldens()["long"]["text"]
        .as_str()
        .unwrap()
        .to_string();
    let cases = [
        (
            json!({"model": MINILM, "input": [101, 2023]}),
            400,
            "token ids",
        ),
        (
            json!({"model": MINILM, "input": []}),
            400,
            "nothing to embed",
        ),
        (
            json!({"model": MINILM, "input": "a", "dimensions": 128}),
            400,
            "384",
        ),
        (json!({"model": MINILM, "input": long}), 400, "256"),
        (
            json!({"model": MINILM, "input": "a", "colour": 1}),
            400,
            "colour",
        ),
        (
            json!({"model": MODEL, "input": "a"}),
            400,
            "makes no embeddings",
        ),
        (json!({"model": "nope", "input": "a"}), 404, "nope"),
    ];
    for (req, want, says) in cases {
        let (status, body) = s.post("/v1/embeddings", &req);
        assert_eq!(status, want, "{req} → {body}");
        let msg = body["error"]["message"].as_str().unwrap();
        assert!(msg.contains(says), "{req} → {msg}");
    }
    // An embedding model cannot chat.
    let (status, body) = s.post(
        "/v1/chat/completions",
        &json!({"model": MINILM, "messages": [{"role": "user", "content": "hi"}]}),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("embedding model")
    );
}

#[test]
fn ollama_embed_routes_agree_with_openai_and_truncate_by_default() {
    let s = server();
    let g = minilm_goldens();
    let texts = ["A man is eating food.", "Embeddings"];
    let (status, openai) = s.post("/v1/embeddings", &json!({"model": MINILM, "input": texts}));
    assert_eq!(status, 200);
    let (status, ollama) = s.post("/api/embed", &json!({"model": MINILM, "input": texts}));
    assert_eq!(status, 200, "{ollama}");
    assert_eq!(ollama["model"], MINILM);
    for i in 0..2 {
        let a = floats(&openai["data"][i]["embedding"]);
        let b = floats(&ollama["embeddings"][i]);
        assert!(max_abs_diff(&a, &b) <= 1e-5);
    }
    assert_eq!(
        ollama["prompt_eval_count"],
        openai["usage"]["prompt_tokens"]
    );
    assert!(ollama["total_duration"].as_u64().unwrap() > 0);
    // Ollama cuts long input unless told not to; the cut matches sentence-transformers'.
    let long = &g["long"];
    let (status, cut) = s.post(
        "/api/embed",
        &json!({"model": MINILM, "input": long["text"], "keep_alive": "10m"}),
    );
    assert_eq!(status, 200, "{cut}");
    let c = cosine(&floats(&cut["embeddings"][0]), &floats(&long["embedding"]));
    assert!(c >= 0.9999, "cosine {c}");
    assert_eq!(cut["prompt_eval_count"], 256);
    let (status, refused) = s.post(
        "/api/embed",
        &json!({"model": MINILM, "input": long["text"], "truncate": false}),
    );
    assert_eq!(status, 400);
    assert!(
        refused["error"].as_str().unwrap().contains("256"),
        "{refused}"
    );
    // The older single-prompt route.
    let (status, old) = s.post(
        "/api/embeddings",
        &json!({"model": MINILM, "prompt": texts[0]}),
    );
    assert_eq!(status, 200, "{old}");
    let a = floats(&old["embedding"]);
    assert!(max_abs_diff(&a, &floats(&ollama["embeddings"][0])) <= 1e-5);
    // What the server tells about the model.
    let (status, show) = s.post("/api/show", &json!({"model": MINILM}));
    assert_eq!(status, 200, "{show}");
    assert_eq!(show["capabilities"], json!(["embedding"]));
    assert_eq!(show["model_info"]["bert.embedding_length"], 384);
    assert_eq!(show["model_info"]["bert.context_length"], 256);
    assert_eq!(show["details"]["family"], "bert");
    assert_eq!(show["details"]["parameter_size"], "23M");
    let listed = s.get("/v1/models");
    let minilm = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == MINILM)
        .unwrap()
        .clone();
    assert_eq!(minilm["max_model_len"], 256);
    assert_eq!(minilm["capabilities"], json!(["embedding"]));
    let smol = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == MODEL)
        .unwrap()
        .clone();
    assert_eq!(smol["capabilities"], json!(["completion"]));
}

#[test]
fn concurrent_requests_get_what_they_get_alone() {
    let s = server();
    let texts: Vec<String> = (0..16)
        .map(|i| {
            format!(
                "sentence number {i} about {}",
                ["cats", "ships", "tax"][i % 3]
            )
        })
        .collect();
    let alone: Vec<Vec<f32>> = texts
        .iter()
        .map(|t| {
            let (status, body) = s.post("/v1/embeddings", &json!({"model": MINILM, "input": t}));
            assert_eq!(status, 200);
            floats(&body["data"][0]["embedding"])
        })
        .collect();
    let together: Vec<Vec<f32>> = s.rt.block_on(async {
        let tasks: Vec<_> = texts
            .iter()
            .map(|t| {
                let client = s.client.clone();
                let url = format!("{}/v1/embeddings", s.url);
                let body = json!({"model": MINILM, "input": t});
                tokio::spawn(async move {
                    let r = client.post(url).json(&body).send().await.unwrap();
                    assert_eq!(r.status().as_u16(), 200);
                    let v: Value = r.json().await.unwrap();
                    floats(&v["data"][0]["embedding"])
                })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    });
    for (a, b) in alone.iter().zip(&together) {
        assert!(max_abs_diff(a, b) <= 1e-5);
    }
    assert_eq!(s.wait_for_metric("forja_engine_pending_requests", 0.0), 0.0);
}
