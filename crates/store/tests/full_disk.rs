#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]
//! A full disk, on a real 1 MiB tmpfs: the space check refuses a pull that cannot fit before
//! writing anything, and a disk that fills up during the transfer gives a clear error, leaves no
//! model installed, and the next pull resumes once there is room.
//!
//! Mounting needs root (CI runs the tests as root). Elsewhere the tests say they were skipped.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use forja_store::{HubRef, NoProgress, Store, StoreConfig, StoreError};
use support::{HubFile, HubRepo, HubServer, noise};

const COMMIT: &str = "89abcdef0123456789abcdef0123456789abcdef";

/// A tmpfs of `bytes`, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(bytes: u64) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("skipped: mounting a tmpfs needs root (CI runs this test as root)");
            return None;
        }
        Some(Tmpfs { dir })
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

fn repo(bytes: Vec<u8>) -> HubRepo {
    HubRepo {
        commit: COMMIT.into(),
        files: vec![HubFile::lfs("big-q8_0.gguf", bytes)],
        token: None,
    }
}

/// forja's manifest on the regular disk, the hub cache on the tmpfs.
fn store(home: &Path, cache: &Path, url: &str) -> Store {
    let mut cfg = StoreConfig::at(home, url);
    cfg.hf_cache = cache.to_path_buf();
    Store::open(cfg).unwrap()
}

fn everything_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
            out.push(e.path());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_model_larger_than_the_free_space_is_refused_before_any_write() {
    let Some(fs) = Tmpfs::mount(1 << 20) else {
        return;
    };
    let server = HubServer::start(vec![("acme/big", repo(noise(3 << 20, 7)))]).await;
    let home = tempfile::tempdir().unwrap();
    let store = store(home.path(), fs.path(), &server.url);
    let hub = HubRef::parse("hf:acme/big:q8_0").unwrap().unwrap();
    let err = store.pull("big", &hub, &NoProgress).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StoreError::NoSpace { .. }), "{msg}");
    assert!(
        msg.contains("not enough disk space") && msg.contains("3145728 more bytes"),
        "{msg}"
    );
    assert!(everything_under(fs.path()).is_empty());
    assert!(server.served().is_empty());
    assert!(store.list().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_disk_that_fills_during_the_transfer_leaves_no_model_and_resumes_later() {
    let Some(fs) = Tmpfs::mount(1 << 20) else {
        return;
    };
    let bytes = noise(600 << 10, 11);
    let server = HubServer::start(vec![("acme/big", repo(bytes.clone()))]).await;
    // Another program takes most of the room between the check and the transfer.
    let filler = fs.path().join("filler");
    let f2 = filler.clone();
    *server.hub.switches.on_transfer.lock().unwrap() = Some(Box::new(move || {
        std::fs::write(&f2, noise(700 << 10, 3)).unwrap();
    }));
    let home = tempfile::tempdir().unwrap();
    let store = store(home.path(), fs.path(), &server.url);
    let hub = HubRef::parse("hf:acme/big:q8_0").unwrap().unwrap();
    let err = store.pull("big", &hub, &NoProgress).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StoreError::DiskFull { .. }), "{msg}");
    assert!(
        msg.contains("disk full") && msg.contains("resumes where it stopped"),
        "{msg}"
    );
    assert!(store.list().unwrap().is_empty());
    let repo_dir = fs.path().join("models--acme--big");
    assert!(
        !repo_dir.join("snapshots").exists(),
        "no half-installed model"
    );
    let sha = HubFile::lfs("x", bytes.clone()).sha256();
    assert!(!repo_dir.join("blobs").join(&sha).exists());
    let part = repo_dir.join("blobs").join(format!("{sha}.incomplete"));
    let kept = std::fs::metadata(&part).unwrap().len();
    assert!(kept > 0 && kept < bytes.len() as u64, "{kept}");

    std::fs::remove_file(&filler).unwrap();
    let pulled = store.pull("big", &hub, &NoProgress).await.unwrap();
    assert_eq!(std::fs::read(&pulled.entry.path).unwrap(), bytes);
    let served = server.served();
    assert_eq!(
        served.last().unwrap().range.as_deref(),
        Some(format!("bytes={kept}-").as_str())
    );
}
