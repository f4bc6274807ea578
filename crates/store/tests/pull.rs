#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]
//! Pulls from a local server that answers like the Hugging Face hub.

mod support;

use std::path::{Path, PathBuf};

use forja_store::{HubRef, NoProgress, Store, StoreConfig, StoreError};
use forja_testkit::gguf_builder::GgufBuilder;
use support::{HubFile, HubRepo, HubServer};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const REPO: &str = "acme/tiny-GGUF";
const Q4: &str = "tiny-q4_k_m.gguf";

/// A real (small) GGUF model file: forja's `arch` reads it like any other.
fn gguf() -> Vec<u8> {
    GgufBuilder::tiny_llama().bytes()
}

fn gguf_repo(token: Option<&str>) -> HubRepo {
    let mut q8 = gguf();
    q8.extend_from_slice(&[0u8; 32]);
    HubRepo {
        commit: COMMIT.into(),
        files: vec![
            HubFile::lfs(Q4, gguf()),
            HubFile::lfs("tiny-q8_0.gguf", q8),
            HubFile::git(
                "README.md",
                b"---\nlicense: apache-2.0\n---\n# tiny\n".to_vec(),
            ),
        ],
        token: token.map(str::to_string),
    }
}

fn store_at(dir: &Path, url: &str) -> Store {
    let mut cfg = StoreConfig::at(dir, url);
    cfg.attempts = 3;
    Store::open(cfg).unwrap()
}

fn hub(name: &str) -> HubRef {
    HubRef::parse(name).unwrap().unwrap()
}

fn repo_dir(home: &Path) -> PathBuf {
    home.join("hub").join("models--acme--tiny-GGUF")
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn pull_by_quant_lands_in_the_hf_cache_layout_and_manifest() {
    let server = HubServer::start(vec![(REPO, gguf_repo(None))]).await;
    let home = tempfile::tempdir().unwrap();
    let store = store_at(home.path(), &server.url);
    let name = format!("hf:{REPO}:q4_k_m");
    let pulled = store.pull(&name, &hub(&name), &NoProgress).await.unwrap();
    assert_eq!(pulled.downloaded_files, 1);

    let sha = HubFile::lfs(Q4, gguf()).sha256();
    let repo = repo_dir(home.path());
    assert_eq!(
        std::fs::read(repo.join("blobs").join(&sha)).unwrap(),
        gguf()
    );
    let link = repo.join("snapshots").join(COMMIT).join(Q4);
    let target = std::fs::read_link(&link).unwrap();
    assert_eq!(target, Path::new("../../blobs").join(&sha));
    assert_eq!(std::fs::read(&link).unwrap(), gguf());
    assert_eq!(
        std::fs::read_to_string(repo.join("refs/main")).unwrap(),
        COMMIT
    );
    // Only the chosen quant came down, and nothing is left half-written.
    assert_eq!(files_in(&repo.join("blobs")), vec![sha.clone()]);

    let e = store.get(&name).unwrap().unwrap();
    assert_eq!(e.path, link);
    assert_eq!(e.arch, "llama");
    assert_eq!(e.context, 2048);
    assert!(e.params > 100_000, "{}", e.params);
    assert_eq!(e.size_bytes, gguf().len() as u64);
    assert_eq!(e.files[0].sha256.as_deref(), Some(sha.as_str()));
    assert_eq!(e.license.as_deref(), Some("apache-2.0"));
    assert_eq!(e.commit.as_deref(), Some(COMMIT));
    assert!(e.owned);

    // A second pull checks the blob and transfers nothing.
    let again = store.pull(&name, &hub(&name), &NoProgress).await.unwrap();
    assert_eq!(again.downloaded_files, 0);
    assert_eq!(server.served_of(Q4).len(), 1);
    // The cache answers for the name without the hub.
    assert_eq!(store.cached(&hub(&name)), Some(e.path.clone()));
}

#[tokio::test(flavor = "multi_thread")]
async fn interrupted_transfer_resumes_with_a_range_request() {
    let server = HubServer::start(vec![(REPO, gguf_repo(None))]).await;
    *server.hub.switches.cut.lock().unwrap() = Some((Q4.into(), 100_000));
    let home = tempfile::tempdir().unwrap();
    let store = store_at(home.path(), &server.url);
    let name = format!("hf:{REPO}:{Q4}");
    store.pull(&name, &hub(&name), &NoProgress).await.unwrap();

    let served = server.served_of(Q4);
    assert_eq!(served.len(), 2, "{served:?}");
    assert_eq!(served[0].range, None);
    assert_eq!(served[0].bytes, 100_000);
    assert_eq!(served[1].range.as_deref(), Some("bytes=100000-"));
    // No byte came twice.
    let total: u64 = served.iter().map(|s| s.bytes).sum();
    assert_eq!(total, gguf().len() as u64);
    let e = store.get(&name).unwrap().unwrap();
    assert_eq!(std::fs::read(&e.path).unwrap(), gguf());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_part_left_by_a_killed_pull_is_continued() {
    let server = HubServer::start(vec![(REPO, gguf_repo(None))]).await;
    let home = tempfile::tempdir().unwrap();
    let sha = HubFile::lfs(Q4, gguf()).sha256();
    // What a process killed mid-transfer leaves behind.
    let blobs = repo_dir(home.path()).join("blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::write(blobs.join(format!("{sha}.incomplete")), &gguf()[..70_000]).unwrap();

    let store = store_at(home.path(), &server.url);
    let name = format!("hf:{REPO}:q4_k_m");
    store.pull(&name, &hub(&name), &NoProgress).await.unwrap();
    let served = server.served_of(Q4);
    assert_eq!(served.len(), 1);
    assert_eq!(served[0].range.as_deref(), Some("bytes=70000-"));
    assert_eq!(served[0].bytes, gguf().len() as u64 - 70_000);
    assert_eq!(files_in(&blobs), vec![sha.clone()]);
    assert_eq!(std::fs::read(blobs.join(&sha)).unwrap(), gguf());
}

#[tokio::test(flavor = "multi_thread")]
async fn corrupted_download_is_detected_and_fetched_again() {
    let server = HubServer::start(vec![(REPO, gguf_repo(None))]).await;
    server
        .hub
        .switches
        .corrupt
        .store(1, std::sync::atomic::Ordering::SeqCst);
    let home = tempfile::tempdir().unwrap();
    let store = store_at(home.path(), &server.url);
    let name = format!("hf:{REPO}:q4_k_m");
    store.pull(&name, &hub(&name), &NoProgress).await.unwrap();
    let served = server.served_of(Q4);
    assert_eq!(
        served.len(),
        2,
        "fetched again after the bad hash: {served:?}"
    );
    assert_eq!(served[1].range, None, "a damaged file starts over");
    let e = store.get(&name).unwrap().unwrap();
    assert_eq!(std::fs::read(&e.path).unwrap(), gguf());

    // Damage on disk is found by the next pull, which fetches the file again.
    let blob = std::fs::canonicalize(&e.path).unwrap();
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[1000] ^= 1;
    std::fs::write(&blob, &bytes).unwrap();
    store.pull(&name, &hub(&name), &NoProgress).await.unwrap();
    assert_eq!(server.served_of(Q4).len(), 3);
    assert_eq!(std::fs::read(&e.path).unwrap(), gguf());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_that_stays_corrupt_fails_and_installs_nothing() {
    let server = HubServer::start(vec![(REPO, gguf_repo(None))]).await;
    server
        .hub
        .switches
        .corrupt
        .store(5, std::sync::atomic::Ordering::SeqCst);
    let home = tempfile::tempdir().unwrap();
    let store = store_at(home.path(), &server.url);
    let name = format!("hf:{REPO}:q4_k_m");
    let err = store
        .pull(&name, &hub(&name), &NoProgress)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains(Q4) && msg.contains("sha256"), "{msg}");
    let repo = repo_dir(home.path());
    assert!(files_in(&repo.join("blobs")).is_empty());
    assert!(!repo.join("snapshots").exists());
    assert!(store.get(&name).unwrap().is_none());
    assert!(store.list().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn gated_repository_says_how_to_get_access() {
    let server = HubServer::start(vec![(REPO, gguf_repo(Some("hf_secret")))]).await;
    let home = tempfile::tempdir().unwrap();
    let name = format!("hf:{REPO}:q4_k_m");

    let store = store_at(home.path(), &server.url);
    let err = store
        .pull(&name, &hub(&name), &NoProgress)
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Gated { .. }), "{msg}");
    assert!(
        msg.contains(&format!("request access at {}/{REPO}", server.url)),
        "{msg}"
    );
    assert!(
        msg.contains("HF_TOKEN") && msg.contains("no token was set"),
        "{msg}"
    );
    assert!(store.list().unwrap().is_empty());

    let mut cfg = StoreConfig::at(home.path(), &server.url);
    cfg.token = Some("hf_wrong".into());
    let err = Store::open(cfg)
        .unwrap()
        .pull(&name, &hub(&name), &NoProgress)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no access"), "{err}");

    let mut cfg = StoreConfig::at(home.path(), &server.url);
    cfg.token = Some("hf_secret".into());
    let store = Store::open(cfg).unwrap();
    store.pull(&name, &hub(&name), &NoProgress).await.unwrap();
    assert!(store.get(&name).unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_repo_file_and_quant_are_clear_errors() {
    let server = HubServer::start(vec![(REPO, gguf_repo(None))]).await;
    let home = tempfile::tempdir().unwrap();
    let store = store_at(home.path(), &server.url);

    let err = store
        .pull("x", &hub("hf:acme/nothing-here"), &NoProgress)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::RepoNotFound { .. }), "{err}");
    assert!(err.to_string().contains("acme/nothing-here was not found"));

    let err = store
        .pull("x", &hub(&format!("hf:{REPO}:q5_k_m")), &NoProgress)
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("no Q5_K_M GGUF") && msg.contains("q4_k_m, q8_0"),
        "{msg}"
    );

    let err = store
        .pull("x", &hub(&format!("hf:{REPO}:other.gguf")), &NoProgress)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no file other.gguf"), "{err}");
    // A repository with several GGUFs and no name: Q4_K_M is the default.
    let pulled = store
        .pull("tiny", &hub(&format!("hf:{REPO}")), &NoProgress)
        .await
        .unwrap();
    assert!(pulled.entry.path.ends_with(Q4));
}

#[tokio::test(flavor = "multi_thread")]
async fn no_network_is_a_clear_error_and_the_cache_still_serves() {
    // A port nothing listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let home = tempfile::tempdir().unwrap();
    let name = format!("hf:{REPO}:q4_k_m");
    let err = store_at(home.path(), &closed)
        .pull(&name, &hub(&name), &NoProgress)
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Offline { .. }), "{msg}");
    assert!(
        msg.contains("cannot reach") && msg.contains("HF_ENDPOINT"),
        "{msg}"
    );

    let server = HubServer::start(vec![(REPO, gguf_repo(None))]).await;
    store_at(home.path(), &server.url)
        .pull(&name, &hub(&name), &NoProgress)
        .await
        .unwrap();
    let pulled = store_at(home.path(), &closed)
        .pull("again", &hub(&name), &NoProgress)
        .await
        .unwrap();
    assert!(pulled.offline);
    assert_eq!(std::fs::read(&pulled.entry.path).unwrap(), gguf());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_blob_another_process_is_fetching_is_waited_for_not_fetched_twice() {
    let server = HubServer::start(vec![(REPO, gguf_repo(None))]).await;
    let home = tempfile::tempdir().unwrap();
    let sha = HubFile::lfs(Q4, gguf()).sha256();
    // Another downloader (huggingface_hub keeps its locks here too) holds the blob's lock.
    let locks = home.path().join("hub/.locks/models--acme--tiny-GGUF");
    std::fs::create_dir_all(&locks).unwrap();
    let lock = std::fs::File::create(locks.join(format!("{sha}.lock"))).unwrap();
    lock.lock().unwrap();

    let store = store_at(home.path(), &server.url);
    let name = format!("hf:{REPO}:q4_k_m");
    let hub = hub(&name);
    let other = async {
        tokio::time::sleep(std::time::Duration::from_millis(600)).await;
        // Had the pull not waited, it would have fetched the missing blob by now.
        assert!(server.served_of(Q4).is_empty());
        // The other downloader finishes the blob and lets go.
        let blobs = repo_dir(home.path()).join("blobs");
        std::fs::create_dir_all(&blobs).unwrap();
        std::fs::write(blobs.join(&sha), gguf()).unwrap();
        lock.unlock().unwrap();
    };
    let (pulled, ()) = tokio::join!(store.pull(&name, &hub, &NoProgress), other);
    assert_eq!(pulled.unwrap().downloaded_files, 0);
    assert!(
        server.served_of(Q4).is_empty(),
        "checked, not fetched again"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hub_model_is_described_without_downloading_it() {
    let config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
        "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "vocab_size": 256, "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "torch_dtype": "bfloat16"
    });
    let st = HubRepo {
        commit: COMMIT.into(),
        files: vec![
            HubFile::git("config.json", serde_json::to_vec(&config).unwrap()),
            HubFile::lfs("model.safetensors", vec![0u8; 4096]),
        ],
        token: None,
    };
    let server = HubServer::start(vec![(REPO, gguf_repo(None)), ("acme/st", st)]).await;
    let home = tempfile::tempdir().unwrap();
    let store = store_at(home.path(), &server.url);

    let d = store
        .describe_remote(&hub(&format!("hf:{REPO}:q4_k_m")))
        .await
        .unwrap();
    assert_eq!(d.config.max_context, 2048);
    assert_eq!(d.config.num_layers, 2);
    assert_eq!(d.stored.as_ref().unwrap().file_bytes, gguf().len() as u64);
    assert_eq!(d.origin, format!("hf:{REPO}:q4_k_m"));

    let d = store.describe_remote(&hub("hf:acme/st")).await.unwrap();
    assert_eq!(d.config.max_context, 4096);
    assert_eq!(d.config.hidden_size, 64);
    assert!(server.served_of("model.safetensors").is_empty());
    // Nothing was stored.
    assert!(!home.path().join("hub").exists());
    assert!(store.list().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn one_model_pulled_under_two_spellings_keeps_one_entry() {
    let server = HubServer::start(vec![(REPO, gguf_repo(None))]).await;
    let home = tempfile::tempdir().unwrap();
    let store = store_at(home.path(), &server.url);
    let h = hub(&format!("hf:{REPO}:q4_k_m"));
    store.pull("tiny:q4", &h, &NoProgress).await.unwrap();
    let again = store.pull(&h.canonical(), &h, &NoProgress).await.unwrap();
    assert_eq!(again.entry.name, "tiny:q4");
    assert_eq!(store.list().unwrap().len(), 1);
    assert_eq!(store.get(&h.canonical()).unwrap().unwrap().name, "tiny:q4");
}

#[test]
fn a_sharded_model_another_tool_fetched_in_part_is_not_taken_for_complete() {
    use forja_store::RemoteFile;
    use forja_store::hf_cache::RepoCache;
    let home = tempfile::tempdir().unwrap();
    let cache = RepoCache::new(&home.path().join("hub"), "acme/big");
    let index = br#"{"weight_map": {"a": "model-00001-of-00002.safetensors",
                                    "b": "model-00002-of-00002.safetensors"}}"#;
    let put = |path: &str, bytes: &[u8], id: &str| {
        std::fs::create_dir_all(cache.dir.join("blobs")).unwrap();
        std::fs::write(cache.blob(id), bytes).unwrap();
        let f = RemoteFile {
            path: path.into(),
            size: bytes.len() as u64,
            sha256: None,
            blob_id: Some(id.into()),
            url: None,
        };
        cache.link(COMMIT, &f, id).unwrap();
    };
    put("config.json", b"{}", &"1".repeat(40));
    put("model.safetensors.index.json", index, &"2".repeat(40));
    put("model-00001-of-00002.safetensors", b"x", &"3".repeat(40));
    cache.write_ref("main", COMMIT).unwrap();
    let store = Store::open(StoreConfig::at(home.path(), "http://127.0.0.1:9")).unwrap();
    let name = hub("hf:acme/big");
    assert_eq!(store.cached(&name), None);
    put("model-00002-of-00002.safetensors", b"y", &"4".repeat(40));
    assert_eq!(store.cached(&name), Some(cache.snapshot(COMMIT)));
}
