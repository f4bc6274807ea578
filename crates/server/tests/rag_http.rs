//! Document collections over HTTP against a live server on a real socket: the real MiniLM
//! embedding model, the real SmolLM2 chat model, real office documents (fixtures/documents,
//! written by python-docx and openpyxl) uploaded as multipart, a SQLite store in a temporary
//! folder, and the server's API key.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

mod common;

use std::path::PathBuf;

use common::{MODEL, Server, load, sse_data};
use forja_engine::serving::{Engine, ServingConfig};
use forja_server::models::ModelPool;
use forja_server::rag::RagConfig;
use forja_server::{AppState, ServerConfig};
use serde_json::{Value, json};

const KEY: &str = "rag-test-key";
const COLLECTION: &str = "company docs";
/// The path of the test collection, percent-encoded.
const PATH: &str = "/v1/rag/collections/company%20docs";

fn fixture(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/documents");
    std::fs::read(p.join(name)).unwrap()
}

/// A multipart/form-data body of `file` parts: (content type, body).
fn multipart(files: &[(&str, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "forja-test-7d1f0c";
    let mut body = Vec::new();
    for (name, bytes) in files {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; \
                 filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

struct Rag {
    s: Server,
    _store: tempfile::TempDir,
}

impl Rag {
    /// A server keeping its collections in a SQLite file of a temporary folder.
    fn start(max_upload_bytes: usize) -> Rag {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("rag.sqlite").display().to_string();
        let reranker =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/tiny/cross-encoder");
        Rag::start_at(store, dir, max_upload_bytes, Some(reranker))
    }

    /// A server on `store`, reranking with `rerank_model` when given.
    fn start_at(
        store: String,
        dir: tempfile::TempDir,
        max_upload_bytes: usize,
        rerank_model: Option<PathBuf>,
    ) -> Rag {
        let minilm = forja_testkit::testdata_dir().join("all-minilm-l6-v2");
        assert!(
            minilm.join("config.json").is_file(),
            "{} is missing: run scripts/fetch-testdata",
            minilm.display()
        );
        let (engine, _thread) = Engine::start(load(), &ServingConfig::default()).unwrap();
        let state = AppState::with_pool(
            ModelPool::preloaded(engine),
            ServerConfig {
                api_key: Some(KEY.into()),
                ..ServerConfig::default()
            },
        )
        .with_rag(RagConfig {
            store,
            embedding_model: Ok(minilm),
            max_upload_bytes,
            rerank_model,
        });
        Rag {
            s: common::start_state(state),
            _store: dir,
        }
    }

    fn send(&self, method: &str, path: &str, body: Option<(String, Vec<u8>)>) -> (u16, Value) {
        self.s.rt.block_on(async {
            let url = format!("{}{path}", self.s.url);
            let mut r = match method {
                "GET" => self.s.client.get(url),
                "DELETE" => self.s.client.delete(url),
                _ => self.s.client.post(url),
            }
            .bearer_auth(KEY);
            if let Some((kind, bytes)) = body {
                r = r.header("content-type", kind).body(bytes);
            }
            let r = r.send().await.unwrap();
            (r.status().as_u16(), r.json().await.unwrap())
        })
    }

    fn json(&self, method: &str, path: &str, body: &Value) -> (u16, Value) {
        let bytes = serde_json::to_vec(body).unwrap();
        self.send(method, path, Some(("application/json".into(), bytes)))
    }

    fn upload(&self, files: &[(&str, &[u8])]) -> (u16, Value) {
        self.send("POST", &format!("{PATH}/files"), Some(multipart(files)))
    }

    fn documents(&self) -> u64 {
        let (status, c) = self.send("GET", PATH, None);
        assert_eq!(status, 200, "{c}");
        c["documents"].as_u64().unwrap()
    }

    fn search(&self, body: Value) -> Value {
        let (status, r) = self.json("POST", &format!("{PATH}/search"), &body);
        assert_eq!(status, 200, "{r}");
        r
    }
}

fn assert_error(status: u16, body: &Value, want: u16, text: &str) {
    assert_eq!(status, want, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains(text), "{message}");
    assert!(body["error"]["type"].is_string(), "{body}");
}

#[test]
fn collections_uploads_search_and_cited_chat_over_http() {
    let rag = Rag::start(64 << 10);
    let s = &rag.s;

    // The routes keep the server's key.
    let (status, body) = s.rt.block_on(async {
        let r = s
            .client
            .get(format!("{}/v1/rag/collections", s.url))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    });
    assert_error(status, &body, 401, "API key");

    let (status, list) = rag.send("GET", "/v1/rag/collections", None);
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["data"], json!([]));
    let (status, c) = rag.json("POST", "/v1/rag/collections", &json!({"name": COLLECTION}));
    assert_eq!(status, 201, "{c}");
    assert_eq!(c["embedding_model"], "all-minilm-l6-v2");
    assert_eq!(c["dimension"], 384);
    let (status, body) = rag.json("POST", "/v1/rag/collections", &json!({"name": COLLECTION}));
    assert_error(status, &body, 409, "exists already");

    // Real documents, and one that is not what its name says: it fails alone.
    let (report, memo, workbook) = (
        fixture("report.docx"),
        fixture("memo.docx"),
        fixture("workbook.xlsx"),
    );
    let (status, up) = rag.upload(&[
        ("report.docx", &report),
        ("memo.docx", &memo),
        ("workbook.xlsx", &workbook),
        ("broken.docx", b"this is not a zip package"),
    ]);
    assert_eq!(status, 200, "{up}");
    let files = up["files"].as_array().unwrap();
    let status_of = |i: usize| files[i]["status"].as_str().unwrap();
    assert_eq!(
        (0..4).map(status_of).collect::<Vec<_>>(),
        ["added", "added", "added", "failed"],
        "{up}"
    );
    assert!(
        files[3]["error"].as_str().unwrap().contains("broken.docx"),
        "{up}"
    );
    assert_eq!(up["failed"], 1);
    assert!(files[1]["chunks"].as_u64().unwrap() >= 1, "{up}");
    assert_eq!(files[0]["bytes"], report.len());
    assert_eq!(rag.documents(), 3);
    // The same content again is recognised.
    let (status, again) = rag.upload(&[("memo.docx", &memo)]);
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["files"][0]["status"], "unchanged");

    // Names that point outside the upload, and a file over the limit, store nothing.
    for bad in ["../evil.md", "/etc/passwd.md", "..\\..\\evil.md"] {
        let (status, body) = rag.upload(&[("fine.md", b"# Fine\n\nfine"), (bad, b"# Evil")]);
        assert_error(status, &body, 400, "refused");
        assert_eq!(body["error"]["param"], "file");
    }
    let big = vec![b'a'; 70 << 10];
    let (status, body) = rag.upload(&[("fine.md", b"# Fine\n\nfine"), ("big.txt", &big)]);
    assert_error(status, &body, 413, "limit");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("big.txt")
    );
    // Many files under the limit that together pass the request's limit (4 files' worth).
    let part = vec![b'b'; 60 << 10];
    let names: Vec<String> = (0..25).map(|i| format!("part{i}.txt")).collect();
    let many: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &part[..])).collect();
    let (status, body) = rag.upload(&many);
    assert_error(status, &body, 413, "request limit");
    // A form field that is not a file, and a body that is not a form.
    let field = (
        "multipart/form-data; boundary=b".to_string(),
        b"--b\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhi\r\n--b--\r\n".to_vec(),
    );
    let (status, body) = rag.send("POST", &format!("{PATH}/files"), Some(field));
    assert_error(status, &body, 400, "is not a file");
    let (status, body) = rag.json("POST", &format!("{PATH}/files"), &json!({"file": "x"}));
    assert_error(status, &body, 400, "multipart/form-data");
    assert_eq!(rag.documents(), 3, "a refused upload stores nothing");

    // Search: by meaning, by keyword, by kind.
    let r = rag.search(json!({"query": "How far ahead must trips be booked?", "k": 3}));
    let first = &r["data"][0];
    assert_eq!(first["source"], "memo.docx", "{r}");
    assert!(first["text"].as_str().unwrap().contains("two weeks ahead"));
    assert_eq!(first["index"], 1);
    assert!(first["similarity"].as_f64().unwrap() > 0.3, "{r}");
    assert!(first["score"].as_f64().unwrap() > 0.0);
    let r = rag.search(json!({"query": "currency risk", "k": 1, "mode": "bm25"}));
    assert_eq!(r["data"][0]["source"], "report.docx", "{r}");
    assert_eq!(r["data"][0]["section"], json!(["Risks"]), "{r}");
    assert!(r["data"][0]["similarity"].is_null());
    // Dated by the Word file's creation date (an upload has no file time of its own).
    assert_eq!(r["data"][0]["date"], "2024-05-01", "{r}");
    let dated = |filters: Value| {
        let r = rag.search(json!({"query": "currency risk", "k": 5, "mode": "bm25",
                                  "filters": filters}));
        r["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["source"] == "report.docx")
    };
    assert!(dated(
        json!({"after": "2024-05-01", "before": "2024-05-01"})
    ));
    assert!(!dated(json!({"before": "2024-04-30"})));
    assert!(!dated(json!({"after": "2024-05-01T12:00:01Z"})));
    let (status, body) = rag.json(
        "POST",
        &format!("{PATH}/search"),
        &json!({"query": "x", "filters": {"after": "last spring"}}),
    );
    assert_error(status, &body, 400, "\"last spring\" is not a date");
    assert_eq!(body["error"]["param"], "filters.after", "{body}");

    // Reranked by the server's cross-encoder: the first stage's candidates in the reranker's
    // order, each with its score; without "rerank" there is no such score.
    let plain = rag.search(json!({"query": "staff salaries", "k": 3}));
    assert!(plain["data"][0].get("rerank_score").is_none(), "{plain}");
    let r = rag.search(json!({"query": "staff salaries", "k": 3, "rerank": true}));
    let scores: Vec<f64> = r["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["rerank_score"].as_f64().unwrap())
        .collect();
    assert_eq!(scores.len(), 3, "{r}");
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{r}");
    let r = rag.search(json!({"query": "staff salaries", "filters": {"type": "table"}}));
    let data = r["data"].as_array().unwrap();
    assert!(!data.is_empty(), "{r}");
    assert!(data.iter().all(|h| h["type"] == "table"), "{r}");
    let (status, body) = rag.json(
        "POST",
        &format!("{PATH}/search"),
        &json!({"query": "x", "filters": {"type": "poem"}}),
    );
    assert_error(status, &body, 400, "unknown chunk type");

    // Chat with retrieval: the answer comes with citations of the uploaded file.
    let question = "How far ahead must travel be booked?";
    let ask = |stream: bool| {
        json!({"model": MODEL, "messages": [{"role": "user", "content": question}],
               "max_tokens": 24, "temperature": 0, "stream": stream,
               "retrieval": {"collection": COLLECTION, "k": 3}})
    };
    let mut reranked = ask(false);
    reranked["retrieval"]["rerank"] = json!(true);
    let (status, chat) = rag.json("POST", "/v1/chat/completions", &reranked);
    assert_eq!(status, 200, "{chat}");
    let cited = chat["citations"].as_array().unwrap();
    assert!(cited.iter().all(|c| c["rerank_score"].is_f64()), "{chat}");
    let (status, chat) = rag.json("POST", "/v1/chat/completions", &ask(false));
    assert_eq!(status, 200, "{chat}");
    let citations = chat["citations"].as_array().unwrap();
    assert!(!citations.is_empty(), "{chat}");
    assert_eq!(citations[0]["source"], "memo.docx", "{chat}");
    assert_eq!(citations[0]["index"], 1);
    assert!(
        citations[0]["text"]
            .as_str()
            .unwrap()
            .contains("two weeks ahead")
    );
    assert!(
        citations[0]["label"]
            .as_str()
            .unwrap()
            .starts_with("memo.docx")
    );
    let answer = chat["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(!answer.trim().is_empty(), "{chat}");
    // The sources were in the prompt: it is much longer than the question alone makes it.
    let (status, plain) = rag.json(
        "POST",
        "/v1/chat/completions",
        &json!({"model": MODEL, "messages": [{"role": "user", "content": question}],
                "max_tokens": 1}),
    );
    assert_eq!(status, 200, "{plain}");
    assert!(plain.get("citations").is_none(), "{plain}");
    let tokens = |v: &Value| v["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(tokens(&chat) > tokens(&plain) + 20, "{chat} {plain}");

    // Streamed: the same citations on the last chunk before [DONE].
    let events = rag.s.rt.block_on(async {
        let r = s
            .client
            .post(format!("{}/v1/chat/completions", s.url))
            .bearer_auth(KEY)
            .json(&ask(true))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        sse_data(&r.text().await.unwrap())
    });
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let (last, rest) = chunks.split_last().unwrap();
    assert_eq!(last["citations"], chat["citations"], "{last}");
    assert!(rest.iter().all(|c| c.get("citations").is_none()));
    let streamed: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(streamed, answer);

    // Nothing relevant: said so, the model not asked.
    let (status, none) = rag.json(
        "POST",
        "/v1/chat/completions",
        &json!({"model": MODEL, "messages": [{"role": "user",
                "content": "What is the best recipe for chocolate cake?"}],
                "retrieval": {"collection": COLLECTION}}),
    );
    assert_eq!(status, 200, "{none}");
    let text = none["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(text.contains("I found nothing relevant"), "{text}");
    assert_eq!(none["citations"], json!([]));
    assert_eq!(none["usage"]["completion_tokens"], 0);
    let (status, body) = rag.json(
        "POST",
        "/v1/chat/completions",
        &json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                "retrieval": {"collection": "nope"}}),
    );
    assert_error(status, &body, 404, "no such collection");

    // Delete: gone, and searching it is a 404.
    let (status, list) = rag.send("GET", "/v1/rag/collections", None);
    assert_eq!(status, 200);
    assert_eq!(list["data"][0]["name"], COLLECTION);
    assert_eq!(list["data"][0]["documents"], 3);
    let (status, d) = rag.send("DELETE", PATH, None);
    assert_eq!(status, 200, "{d}");
    assert_eq!(d["deleted"], true);
    let (status, body) = rag.send("GET", PATH, None);
    assert_error(status, &body, 404, "no collection");
    let (status, body) = rag.json("POST", &format!("{PATH}/search"), &json!({"query": "x"}));
    assert_error(status, &body, 404, "no such collection");
    let (status, body) = rag.send("DELETE", PATH, None);
    assert_error(status, &body, 404, "no collection");
}

/// The same routes over PostgreSQL + pgvector (the server `scripts/pg` runs; skipped without
/// FORJA_TEST_PG_URL, as the RAG crate's PostgreSQL tests are).
#[test]
fn a_postgres_store_over_http() {
    let Some(url) = std::env::var("FORJA_TEST_PG_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        eprintln!("FORJA_TEST_PG_URL is not set: run under scripts/pg run");
        return;
    };
    let rag = Rag::start_at(url, tempfile::tempdir().unwrap(), 1 << 20, None);
    // A name of its own: the database may be shared with other tests.
    let name = format!("http-{}", std::process::id());
    let path = format!("/v1/rag/collections/{name}");
    let (status, c) = rag.json("POST", "/v1/rag/collections", &json!({"name": name}));
    assert_eq!(status, 201, "{c}");
    let multipart_body = multipart(&[
        ("memo.docx", &fixture("memo.docx")),
        ("report.docx", &fixture("report.docx")),
    ]);
    let (status, up) = rag.send("POST", &format!("{path}/files"), Some(multipart_body));
    assert_eq!(status, 200, "{up}");
    assert_eq!(up["failed"], 0, "{up}");
    let (status, r) = rag.json(
        "POST",
        &format!("{path}/search"),
        &json!({"query": "How far ahead must trips be booked?", "k": 3}),
    );
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["data"][0]["source"], "memo.docx", "{r}");
    // This server has no reranker: asking for one is the client's mistake, said as such.
    let (status, body) = rag.json(
        "POST",
        &format!("{path}/search"),
        &json!({"query": "trips", "rerank": true}),
    );
    assert_error(status, &body, 400, "--rerank-model");
    assert_eq!(body["error"]["param"], "rerank", "{body}");
    let (status, chat) = rag.json(
        "POST",
        "/v1/chat/completions",
        &json!({"model": MODEL, "max_tokens": 8, "temperature": 0,
                "messages": [{"role": "user", "content": "How far ahead must travel be booked?"}],
                "retrieval": {"collection": name}}),
    );
    assert_eq!(status, 200, "{chat}");
    assert_eq!(chat["citations"][0]["source"], "memo.docx", "{chat}");
    let (status, d) = rag.send("DELETE", &path, None);
    assert_eq!(status, 200, "{d}");
}
