//! `forja tune` end to end on a real quantized model: a PEFT adapter folder and the loss curve
//! come out, `forja run --adapter` uses the adapter and `forja serve --adapter` serves it per
//! request with the same answer, and bad data, settings or adapters fail in one line that says
//! where.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use forja_testkit::testdata_file;

mod tune_common;
use tune_common::{DATA, forja, text};

fn model() -> String {
    testdata_file("SmolLM2-135M-Instruct.Q4_1.gguf")
        .display()
        .to_string()
}

fn tune_args<'a>(model: &'a str, data: &'a Path, out: &'a Path) -> Vec<String> {
    [
        "tune",
        "--model",
        model,
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--steps",
        "2",
        "--batch",
        "2",
        "--grad-accum",
        "1",
        "--rank",
        "4",
        "--targets",
        "q_proj,v_proj",
        "--eval-split",
        "0.34",
        "--max-len",
        "96",
        "--lr",
        "1e-3",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn tune_writes_a_peft_adapter_that_run_applies() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("clauses.jsonl");
    std::fs::write(&data, DATA).unwrap();
    let out = dir.path().join("adapter");
    let model = model();
    let args = tune_args(&model, &data, &out);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = forja(&args);
    let stderr = text(&r.stderr);
    assert!(r.status.success(), "tune failed: {stderr}");
    assert!(stderr.contains("4 train / 2 eval examples"), "{stderr}");
    assert!(stderr.contains("eval before training: loss"), "{stderr}");
    assert!(stderr.contains("step 2/2"), "{stderr}");
    assert!(stderr.contains("tok/s"), "{stderr}");
    assert!(stderr.contains("eval after training: loss"), "{stderr}");
    assert_eq!(
        text(&r.stdout),
        format!("adapter written to {}\n", out.display())
    );

    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!(config["peft_type"], "LORA");
    assert_eq!(config["r"], 4);
    assert_eq!(
        config["target_modules"],
        serde_json::json!(["q_proj", "v_proj"])
    );
    assert!(out.join("adapter_model.safetensors").is_file());
    let csv = std::fs::read_to_string(out.join("loss.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 3, "{csv}");
    assert!(lines[0].starts_with("step,epoch,lr,loss"));
    // The curve as an image too (900×540 RGB PNG).
    let png = std::fs::read(out.join("loss.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert_eq!(&png[12..16], b"IHDR");
    assert_eq!(u32::from_be_bytes(png[16..20].try_into().unwrap()), 900);
    assert_eq!(u32::from_be_bytes(png[20..24].try_into().unwrap()), 540);
    // The last step carries the evaluation.
    let last: Vec<&str> = lines[2].split(',').collect();
    assert!(last[5].parse::<f64>().unwrap() > 0.0, "{csv}");
    // No temporary file is left behind.
    let names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.ends_with(".partial")), "{names:?}");

    let r = forja(&[
        "run",
        &model,
        "--adapter",
        out.to_str().unwrap(),
        "--temperature",
        "0",
        "--max-tokens",
        "4",
        "Classify: the lease ends after 30 days notice.",
    ]);
    assert!(r.status.success(), "run failed: {}", text(&r.stderr));
    // The answer, without the note that it stopped at the token limit.
    let stdout = text(&r.stdout);
    let answer = stdout
        .trim()
        .trim_end_matches("[length limit]")
        .trim()
        .to_string();
    assert!(!answer.is_empty());

    // Served beside the base model, the adapter gives `forja run --adapter`'s answer.
    let spec = format!("clauses={}", out.display());
    let mut child = Command::new(env!("CARGO_BIN_EXE_forja"))
        .args(["serve", &model, "--port", "0", "--adapter", &spec])
        .env("FORJA_LOG", "off")
        .env_remove("FORJA_API_KEY")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = String::new();
    let mut addr = None;
    while !seen.contains("ready:") {
        let Some(line) = lines.next() else {
            let _ = child.kill();
            panic!("forja serve ended before serving:\n{seen}");
        };
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("serving at http://") {
            addr = rest.split("/v1").next().map(str::to_string);
        }
        seen += &line;
        seen.push('\n');
    }
    // The served adapters are listed right after the pool.
    seen += &lines.next().unwrap().unwrap();
    std::thread::spawn(move || lines.for_each(drop));
    let addr = addr.unwrap();
    let name = "SmolLM2-135M-Instruct.Q4_1.gguf+clauses";
    let (status, v) = post(
        &addr,
        "/v1/chat/completions",
        &serde_json::json!({
            "model": name,
            "messages": [{"role": "user", "content": "Classify: the lease ends after 30 days notice."}],
            "temperature": 0,
            "max_tokens": 4,
        }),
    );
    let models = get(&addr, "/v1/models");
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .trim(),
        answer
    );
    assert!(models.contains(&format!("\"{name}\"")), "{models}");
    assert!(
        seen.contains(&format!(
            "adapter clauses: requests with \"model\": \"{name}\""
        )),
        "{seen}"
    );
}

/// One HTTP/1.1 exchange with `addr` (no client library: the request is a few lines).
fn exchange(addr: &str, request: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

fn post(addr: &str, path: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
    let body = body.to_string();
    let (status, text) = exchange(
        addr,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    (status, serde_json::from_str(&text).unwrap())
}

fn get(addr: &str, path: &str) -> String {
    exchange(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    )
    .1
}

#[test]
fn serve_refuses_an_adapter_that_does_not_fit_the_model() {
    // The tiny Llama's adapter has other shapes than SmolLM2's projections.
    let adapter = forja_testkit::fixtures_dir().join("goldens/lora/trained");
    let spec = format!("tiny={}", adapter.display());
    let r = forja(&["serve", &model(), "--port", "0", "--adapter", &spec]);
    assert!(!r.status.success());
    let stderr = text(&r.stderr);
    assert!(
        stderr.contains("adapter tiny does not fit") && stderr.contains("do not fit its"),
        "{stderr}"
    );
    // A folder that is no adapter fails before the server starts.
    let r = forja(&[
        "serve",
        &model(),
        "--port",
        "0",
        "--adapter",
        "x=/nonexistent/adapter",
    ]);
    assert!(!r.status.success());
    assert!(
        text(&r.stderr).contains("adapter_config.json"),
        "{}",
        text(&r.stderr)
    );
    let r = forja(&["serve", &model(), "--adapter", "a+b=/tmp"]);
    assert!(!r.status.success());
    assert!(
        text(&r.stderr).contains("adapter name `a+b`"),
        "{}",
        text(&r.stderr)
    );
}

/// `tune_args` training on `train` and evaluating on the records of `eval`.
fn with_eval_file(model: &str, train: &Path, eval: &Path, out: &Path) -> Vec<String> {
    let mut args = tune_args(model, train, out);
    let at = args.iter().position(|a| a == "--eval-split").unwrap();
    args.drain(at..at + 2);
    args.extend(["--eval-data".into(), eval.to_str().unwrap().into()]);
    args
}

#[test]
fn tune_evaluates_on_its_own_file_packs_and_recomputes_layers() {
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<&str> = DATA.lines().collect();
    let train = dir.path().join("train.jsonl");
    std::fs::write(&train, lines[..4].join("\n")).unwrap();
    let eval = dir.path().join("held-out.jsonl");
    std::fs::write(&eval, lines[4..].join("\n")).unwrap();
    let out = dir.path().join("adapter");
    let model = model();
    let mut args = with(
        with_eval_file(&model, &train, &eval, &out),
        "--max-len",
        "256",
    );
    args.extend(["--packing".into(), "--gradient-checkpointing".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = forja(&args);
    let stderr = text(&r.stderr);
    assert!(r.status.success(), "tune failed: {stderr}");
    // The four records (~50 tokens each with the template's system prompt) fit one pack of
    // 256 tokens, the two held-out ones another.
    assert!(
        stderr.contains("packed 4 train / 2 eval examples into 1 / 1 sequences of up to 256"),
        "{stderr}"
    );
    assert!(stderr.contains("1 train / 1 eval examples"), "{stderr}");
    let loss = |what: &str| -> f64 {
        let line = stderr.lines().find(|l| l.starts_with(what)).unwrap();
        let value = line[what.len()..].split_whitespace().next().unwrap();
        value.trim_end_matches(',').parse().unwrap()
    };
    assert!(loss("eval before training: loss") > 0.0, "{stderr}");
    assert!(stderr.contains("step 2/2"), "{stderr}");
    assert!(loss("eval after training: loss") > 0.0, "{stderr}");
    assert!(out.join("adapter_model.safetensors").is_file());
}

#[test]
fn bad_data_and_settings_fail_in_one_line_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("bad.jsonl");
    std::fs::write(
        &data,
        "{\"instruction\": \"a\", \"output\": \"b\"}\n{\"instruction\": \"a\"}\n",
    )
    .unwrap();
    let out = dir.path().join("adapter");
    let model = model();
    let mut cases: Vec<(Vec<String>, &str)> = Vec::new();
    cases.push((
        tune_args(&model, &data, &out),
        "bad.jsonl, line 2: no `output`",
    ));
    let good = dir.path().join("good.jsonl");
    std::fs::write(&good, DATA).unwrap();
    let mut bogus = tune_args(&model, &good, &out);
    let at = bogus.iter().position(|a| a == "q_proj,v_proj").unwrap();
    bogus[at] = "qq_proj".into();
    cases.push((bogus, "no projection of this model is named \"qq_proj\""));
    let mut rank0 = tune_args(&model, &good, &out);
    let at = rank0.iter().position(|a| a == "--rank").unwrap();
    rank0[at + 1] = "0".into();
    cases.push((rank0, "LoRA rank must be at least 1"));
    cases.push((
        with_eval_file(&model, &good, &data, &out),
        "bad.jsonl, line 2: no `output`",
    ));
    for (args, want) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = forja(&args);
        let stderr = text(&r.stderr);
        assert_eq!(r.status.code(), Some(1), "{stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(want), "{stderr}");
    }
    assert!(!out.exists(), "a failed run left an output folder");
    let r = forja(&[
        "run",
        &model,
        "--adapter",
        dir.path().to_str().unwrap(),
        "hi",
    ]);
    assert_eq!(r.status.code(), Some(1));
    assert!(
        text(&r.stderr).contains("adapter_config.json"),
        "{}",
        text(&r.stderr)
    );
}

#[test]
fn merge_writes_a_model_folder_and_asks_a_gguf_name_for_a_gguf_base() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("merged");
    let tiny = forja_testkit::fixtures_dir().join("tiny/llama");
    let adapter = forja_testkit::fixtures_dir().join("goldens/lora/trained");
    let args = [
        "tune",
        "merge",
        "--model",
        tiny.to_str().unwrap(),
        "--adapter",
        adapter.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    let r = forja(&args);
    assert!(r.status.success(), "merge failed: {}", text(&r.stderr));
    assert_eq!(
        text(&r.stdout),
        format!(
            "merged 21 projections; model written to {}\n",
            out.display()
        )
    );
    assert!(out.join("model.safetensors").is_file() && out.join("config.json").is_file());

    let model = model();
    let gguf_out = dir.path().join("merged-gguf");
    let r = forja(&[
        "tune",
        "merge",
        "--model",
        &model,
        "--adapter",
        adapter.to_str().unwrap(),
        "--out",
        gguf_out.to_str().unwrap(),
    ]);
    let stderr = text(&r.stderr);
    assert_eq!(r.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("a GGUF base merges into a GGUF file: give --out NAME.gguf"),
        "{stderr}"
    );
    assert!(!gguf_out.exists());

    // Training without its required flags is a usage error.
    let r = forja(&["tune", "--data", "x.jsonl"]);
    assert_eq!(r.status.code(), Some(2), "{}", text(&r.stderr));
}

/// `tune_args` with `flag`'s value replaced.
fn with(mut args: Vec<String>, flag: &str, value: &str) -> Vec<String> {
    let i = args.iter().position(|a| a == flag).unwrap();
    args[i + 1] = value.to_string();
    args
}

/// step, epoch, lr, loss, grad_norm and eval columns of a loss.csv (not the timings).
fn curve(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("loss.csv"))
        .unwrap()
        .lines()
        .map(|l| l.split(',').take(7).collect::<Vec<_>>().join(","))
        .collect()
}

#[test]
fn ctrl_c_leaves_a_checkpoint_that_resume_finishes_into_the_same_adapter() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("clauses.jsonl");
    std::fs::write(&data, DATA).unwrap();
    let model = model();
    let whole = dir.path().join("whole");
    let cut = dir.path().join("cut");
    let args = |out: &Path| with(tune_args(&model, &data, out), "--steps", "4");

    let args_whole = args(&whole);
    let o = forja(&args_whole.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(!whole.join("checkpoint").exists());

    // Stopped with Ctrl-C (SIGINT) once the first checkpoint is written.
    let mut run_args = args(&cut);
    run_args.extend(["--save-every".to_string(), "1".to_string()]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_forja"))
        .args(&run_args)
        .env("FORJA_LOG", "off")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let state = cut.join("checkpoint/state.json");
    let t0 = std::time::Instant::now();
    while !state.exists() {
        assert!(t0.elapsed().as_secs() < 300, "no checkpoint appeared");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(
        err.contains("the same command with --resume continues"),
        "{err}"
    );
    assert!(state.exists() && !cut.join("adapter_model.safetensors").exists());
    let stopped_at = curve(&cut).len() - 1;
    assert!((1..4).contains(&stopped_at), "{err}");

    // Other settings: refused, naming what differs; the checkpoint stays.
    let mut other = with(run_args.clone(), "--lr", "5e-3");
    other.push("--resume".into());
    let o = forja(&other.iter().map(String::as_str).collect::<Vec<_>>());
    let e = text(&o.stderr);
    assert!(
        !o.status.success() && e.contains("train.lr: 0.001 → 0.005"),
        "{e}"
    );
    assert!(state.exists());
    // Starting again over an unfinished run is refused too.
    let o = forja(&run_args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        text(&o.stderr).contains("continue it with --resume"),
        "{}",
        text(&o.stderr)
    );

    let mut resume = run_args.clone();
    resume.push("--resume".into());
    let o = forja(&resume.iter().map(String::as_str).collect::<Vec<_>>());
    let e = text(&o.stderr);
    assert!(o.status.success(), "{e}");
    assert!(
        e.contains(&format!("resuming after step {stopped_at}/4")),
        "{e}"
    );
    assert!(!cut.join("checkpoint").exists());
    assert_eq!(curve(&cut), curve(&whole));
    assert_eq!(
        std::fs::read(cut.join("adapter_model.safetensors")).unwrap(),
        std::fs::read(whole.join("adapter_model.safetensors")).unwrap()
    );
}
