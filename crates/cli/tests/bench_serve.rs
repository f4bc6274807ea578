//! `forja bench serve` against a real `forja serve` of the SmolLM2 model on a free loopback port.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};

use forja_testkit::testdata_file;
use serde_json::Value;

/// A running `forja serve`, killed when dropped.
struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn forja() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_forja"));
    c.env("FORJA_LOG", "off").env_remove("FORJA_API_KEY");
    c
}

/// Starts the server on port 0, reads its address from the "serving at http://ADDR/v1" line on
/// stderr and waits for the "ready:" line (the model loaded).
fn serve() -> Server {
    let model = testdata_file("SmolLM2-135M-Instruct.Q4_1.gguf");
    let mut child = forja()
        .args(["serve", model.to_str().unwrap(), "--port", "0"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = String::new();
    let mut url = None;
    loop {
        let Some(line) = lines.next() else {
            let _ = child.kill();
            panic!("forja serve ended before serving:\n{seen}");
        };
        let line = line.unwrap();
        seen += &line;
        seen.push('\n');
        if let Some(rest) = line.strip_prefix("serving at http://") {
            url = Some(format!("http://{}", rest.split("/v1").next().unwrap()));
        }
        if line.starts_with("ready:") {
            break;
        }
    }
    let url = url.unwrap_or_else(|| panic!("no address in:\n{seen}"));
    // Keep reading stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    Server { child, url }
}

fn bench(args: &[&str]) -> Output {
    forja()
        .args(["bench", "serve", "--duration", "240"])
        .args(args)
        .output()
        .unwrap()
}

fn json_of(out: &Output) -> Value {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench serve failed: {stderr}");
    serde_json::from_slice(&out.stdout).unwrap()
}

fn assert_ordered(r: &Value, key: &str) {
    let p = |q: &str| {
        r[key][q]
            .as_f64()
            .unwrap_or_else(|| panic!("{key}.{q} missing: {r}"))
    };
    assert!(
        0.0 <= p("p50") && p("p50") <= p("p90") && p("p90") <= p("p99"),
        "{key}: {r}"
    );
    assert!(p("mean") > 0.0, "{key}: {r}");
}

#[test]
fn bench_serve_measures_a_live_forja_server() {
    let server = serve();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("runs/closed.json");
    let out = bench(&[
        "--url",
        &server.url,
        "--requests",
        "6",
        "--clients",
        "3",
        "--input-tokens",
        "32",
        "--output-tokens",
        "8",
        "--slo-ttft-ms",
        "600000",
        "--json",
        "--out",
        file.to_str().unwrap(),
    ]);
    let r = json_of(&out);
    assert_eq!(r["requests_ok"], 6, "{r}");
    assert_eq!(r["requests_failed"], 0, "{r}");
    assert!(r["output_tokens"].as_u64().unwrap() > 0, "{r}");
    assert!(r["output_tokens"].as_u64().unwrap() <= 6 * 8, "{r}");
    assert!(r["output_tokens_per_s"].as_f64().unwrap() > 0.0, "{r}");
    for key in ["ttft_ms", "itl_ms", "e2e_ms"] {
        assert_ordered(&r, key);
    }
    assert!(
        r["ttft_ms"]["p99"].as_f64() <= r["e2e_ms"]["p99"].as_f64(),
        "{r}"
    );
    assert_eq!(r["requests_meeting_slo"], 6, "{r}");
    let s = &r["settings"];
    assert_eq!(s["model"], "SmolLM2-135M-Instruct.Q4_1.gguf", "{r}");
    assert_eq!(
        (&s["url"], &s["clients"]),
        (&Value::from(server.url.clone()), &3.into())
    );
    assert!(s.get("api_key").is_none(), "{r}");
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(saved, r);
    let files = std::fs::read_dir(file.parent().unwrap()).unwrap().count();
    assert_eq!(files, 1, "a temporary file was left beside the report");

    // Open loop, a shared prefix, the /v1 form of the URL and the table output.
    let url = format!("{}/v1", server.url);
    let out = bench(&[
        "--url",
        &url,
        "--rate",
        "20",
        "--requests",
        "4",
        "--input-tokens",
        "24",
        "--input-jitter",
        "0.25",
        "--shared-prefix",
        "12",
        "--output-tokens",
        "4",
        "--seed",
        "3",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("open loop at 20 requests/s"), "{text}");
    let ok_row = text.lines().find(|l| l.starts_with("requests ok")).unwrap();
    assert!(ok_row.ends_with(" 4"), "{text}");
    for row in ["TTFT", "ITL", "E2E", "output tok/s", "goodput (req/s)"] {
        assert!(text.contains(row), "{row} missing: {text}");
    }

    // A model the server does not have: every request fails, with the server's reason.
    let out = bench(&[
        "--url",
        &server.url,
        "--model",
        "nope",
        "--requests",
        "2",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (&r["requests_ok"], &r["requests_failed"]),
        (&0.into(), &2.into())
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("succeeded: HTTP 404") && stderr.contains("nope"),
        "{stderr}"
    );
}

#[test]
fn bench_serve_refuses_other_hosts_and_explains_a_missing_server() {
    let out = bench(&["--url", "http://192.0.2.1:8080"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("must be this machine's loopback"),
        "{stderr}"
    );
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = bench(&["--url", &format!("http://127.0.0.1:{port}")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot reach") && stderr.contains("forja serve MODEL"),
        "{stderr}"
    );
    let out = bench(&["--clients", "2", "--rate", "3"]);
    assert_eq!(out.status.code(), Some(2));
}
