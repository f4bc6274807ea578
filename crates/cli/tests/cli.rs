//! The `forja` binary end to end: output snapshots (insta), JSON, and one-line errors.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

use std::process::Command;

use forja_testkit::{testdata_dir, testdata_file};

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn forja(args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_forja"))
        .args(args)
        .env("FORJA_LOG", "off")
        .env("FORJA_NVML_LIB", "/nonexistent/libnvidia-ml.so.1")
        .output()
        .unwrap();
    let clean = |b: &[u8]| {
        String::from_utf8_lossy(b).replace(&testdata_dir().display().to_string(), "[TESTDATA]")
    };
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: clean(&out.stdout),
        stderr: clean(&out.stderr),
    }
}

fn ok(args: &[&str]) -> String {
    let r = forja(args);
    assert_eq!(r.code, 0, "forja {args:?} failed: {}", r.stderr);
    r.stdout
}

/// Runs a command that must fail; returns its single stderr line.
fn fails(args: &[&str]) -> String {
    let r = forja(args);
    assert_eq!(
        r.code, 1,
        "forja {args:?} should fail, stdout: {}",
        r.stdout
    );
    assert!(!r.stderr.contains("panicked"), "panic: {}", r.stderr);
    assert_eq!(
        r.stderr.trim_end().lines().count(),
        1,
        "error is not one line: {}",
        r.stderr
    );
    r.stderr.trim_end().to_string()
}

#[test]
fn help_lists_only_working_commands() {
    insta::assert_snapshot!(ok(&["--help"]));
}

#[test]
fn plan_8b_on_a_4090() {
    insta::assert_snapshot!(ok(&["plan", "llama-3.1-8b-instruct", "--gpu", "4090"]));
}

#[test]
fn plan_70b_across_the_gpu_catalog() {
    insta::assert_snapshot!(ok(&[
        "plan",
        "llama-3.1-70b",
        "--quant",
        "q4_k_m",
        "--ctx",
        "8192",
        "--users",
        "8"
    ]));
}

#[test]
fn plan_mixtral_on_the_8000_usd_build() {
    insta::assert_snapshot!(ok(&[
        "plan",
        "mixtral-8x7b-instruct-v0.1",
        "--budget",
        "8000",
        "--ctx",
        "4096"
    ]));
}

#[test]
fn plan_gemma3_sliding_window_kv() {
    insta::assert_snapshot!(ok(&[
        "plan",
        "gemma-3-27b-it",
        "--gpu",
        "rtx-5090",
        "--ctx",
        "32768",
        "--kv-dtype",
        "q8_0"
    ]));
}

#[test]
fn plan_qlora_on_a_16gb_card() {
    insta::assert_snapshot!(ok(&[
        "plan",
        "llama-3.1-8b-instruct",
        "--mode",
        "qlora",
        "--gpu",
        "4060ti",
        "--lora-rank",
        "16",
        "--lora-targets",
        "all",
        "--seq-len",
        "2048",
        "--gradient-checkpointing",
    ]));
}

#[test]
fn plan_full_finetune_on_h100() {
    insta::assert_snapshot!(ok(&[
        "plan",
        "qwen2.5-7b-instruct",
        "--mode",
        "full-finetune",
        "--gpu",
        "h100",
        "--optimizer",
        "adamw-8bit",
        "--gradient-checkpointing",
        "--micro-batch",
        "4",
        "--seq-len",
        "1024",
    ]));
}

#[test]
fn plan_real_gguf_file() {
    let f = testdata_file("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf");
    insta::assert_snapshot!(ok(&[
        "plan",
        f.to_str().unwrap(),
        "--gpu",
        "3060",
        "--ctx",
        "32768",
        "--users",
        "4"
    ]));
}

#[test]
fn budget_without_model_lists_what_the_build_runs() {
    insta::assert_snapshot!(ok(&["plan", "--budget", "4000", "--ctx", "8192"]));
}

#[test]
fn catalog_coding_models() {
    insta::assert_snapshot!(ok(&["catalog", "--task", "coding"]));
}

#[test]
fn catalog_fits_a_4090() {
    insta::assert_snapshot!(ok(&["catalog", "--fits", "--gpu", "4090", "--ctx", "8192"]));
}

#[test]
fn catalog_hardware() {
    insta::assert_snapshot!(ok(&["catalog", "--hardware"]));
}

#[test]
fn errors_are_one_line_and_say_what_to_do() {
    let bad_gguf = tempfile::NamedTempFile::with_suffix(".gguf").unwrap();
    std::fs::write(bad_gguf.path(), b"GGUF\x03\0\0\0\x01").unwrap();
    let bad_path = bad_gguf.path().to_str().unwrap().to_string();
    let smol = forja_testkit::testdata_file("SmolLM2-135M-Instruct.Q4_1.gguf");
    let smol = smol.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        // This build has no GPU support (the `cuda` feature), or this machine no GPU.
        (
            vec!["run", smol, "--device", "cuda", "Hi"],
            "cannot start on cuda:0",
        ),
        // How a GPU keeps the weights means nothing on the CPU.
        (
            vec!["run", smol, "--gpu-weights", "f16", "Hi"],
            "--gpu-weights f16 is for a GPU: add --device cuda",
        ),
        (
            vec!["serve", smol, "--gpu-weights", "stored"],
            "--gpu-weights stored is for a GPU",
        ),
        (
            vec!["plan", "lama-3.1-8b-instruct"],
            "did you mean llama-3.1-8b-instruct",
        ),
        (
            vec!["plan", "llama-3.1-8b-instruct", "--gpu", "rtx-9999"],
            "unknown GPU \"rtx-9999\"",
        ),
        (
            vec!["plan", "llama-3.1-8b-instruct", "--quant", "q9_k"],
            "unknown weight format \"q9_k\"",
        ),
        (
            vec!["plan", "llama-3-8b-instruct", "--ctx", "100000"],
            "beyond this model's trained maximum of 8192",
        ),
        (
            vec!["plan", "llama-3-8b-instruct", "--users", "0"],
            "must be at least 1",
        ),
        (
            vec!["plan", "llama-3-8b-instruct", "--budget", "900"],
            "below the smallest reference build",
        ),
        (vec!["plan", "./nope/config.json"], "no such file or folder"),
        (vec!["plan", &bad_path], "truncated"),
        (
            vec![
                "plan",
                "llama-3-8b-instruct",
                "--mode",
                "full-finetune",
                "--quant",
                "q4_k_m",
            ],
            "use --quant bf16",
        ),
        (
            vec![
                "plan",
                "llama-3-8b-instruct",
                "--mode",
                "lora",
                "--lora-targets",
                "attn",
            ],
            "unknown LoRA target",
        ),
        (
            vec!["plan", "llama-3-8b-instruct", "--kv-dtype", "int3"],
            "unknown weight format \"int3\"",
        ),
        (vec!["plan"], "name a model to plan"),
        (vec!["catalog", "--task", "poetry"], "invalid task"),
    ];
    for (args, expected) in cases {
        let e = fails(&args);
        assert!(
            e.starts_with("error: ") && e.contains(expected),
            "forja {args:?}: {e}"
        );
    }
}

#[test]
fn usage_mistakes_are_one_line_with_exit_code_2() {
    for (args, expected) in [
        (vec!["plna"], "similar subcommand exists: 'plan'"),
        (
            vec!["plan", "llama-3-8b-instruct", "--users", "many"],
            "invalid value 'many'",
        ),
        (
            vec!["plan", "llama-3-8b-instruct", "--mode", "pretrain"],
            "invalid value 'pretrain'",
        ),
        (
            vec!["plan", "x", "--gpu", "4090", "--budget", "4000"],
            "cannot be used with",
        ),
        (
            vec!["run", "x.gguf", "--device", "cuda", "--gpu-weights", "q4"],
            "use stored or f16",
        ),
    ] {
        let r = forja(&args);
        assert_eq!(r.code, 2, "forja {args:?}: {}", r.stderr);
        assert_eq!(r.stderr.trim_end().lines().count(), 1, "{}", r.stderr);
        assert!(r.stderr.contains(expected), "forja {args:?}: {}", r.stderr);
    }
}

#[test]
fn plan_json_follows_the_documented_schema() {
    let out = ok(&[
        "plan",
        "mixtral-8x7b-instruct-v0.1",
        "--quant",
        "bf16",
        "--gpu",
        "a100-80gb",
        "--gpus",
        "2",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let doc =
        std::fs::read_to_string(forja_testkit::repo_root().join("docs/plan-json.md")).unwrap();
    // Every key of the output is documented, and the numbers hold together.
    fn keys(v: &serde_json::Value, prefix: &str, out: &mut Vec<String>) {
        if let Some(o) = v.as_object() {
            for (k, child) in o {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                out.push(path.clone());
                keys(child, &path, out);
            }
        } else if let Some(first) = v.as_array().and_then(|a| a.first()) {
            keys(first, &format!("{prefix}[]"), out);
        }
    }
    let mut all = Vec::new();
    keys(&v, "", &mut all);
    let undocumented: Vec<&String> = all
        .iter()
        .filter(|k| !k.contains("bytes_by_type.") && !doc.contains(&format!("`{k}`")))
        .collect();
    assert!(
        undocumented.is_empty(),
        "undocumented keys: {undocumented:?}"
    );
    assert_eq!(v["schema_version"], 1);
    let m = &v["memory"];
    let sum = [
        "weights_bytes",
        "kv_cache_bytes",
        "activations_bytes",
        "overhead_bytes",
    ]
    .iter()
    .map(|k| m[k].as_u64().unwrap())
    .sum::<u64>();
    assert_eq!(sum, m["total_bytes"].as_u64().unwrap());
    let fit = &v["devices"][0];
    assert_eq!(
        fit["devices_needed"], 2,
        "mixtral bf16 (93 GB) needs two A100-80GB: {fit}"
    );
}

#[test]
fn hw_reports_this_machine() {
    let out = ok(&["hw", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let threads = std::thread::available_parallelism().unwrap().get() as u64;
    assert_eq!(v["cpu"]["logical_cores"].as_u64(), Some(threads));
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let total_kib: u64 = meminfo
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(v["memory"]["total_bytes"].as_u64(), Some(total_kib * 1024));
    assert!(v["gpus"]["gpus"].as_array().unwrap().is_empty());
    assert!(
        v["gpus"]["unavailable_reason"]
            .as_str()
            .unwrap()
            .contains("no NVIDIA driver")
    );
    let text = ok(&["hw"]);
    assert!(text.contains("GPU       no NVIDIA GPU"), "{text}");
    assert!(text.contains(&format!("{threads} threads")), "{text}");
}

#[test]
fn plan_here_uses_this_machines_ram() {
    let out = ok(&[
        "plan",
        "smollm2-135m-instruct",
        "--here",
        "--ctx",
        "2048",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let d = &v["devices"][0];
    assert_eq!(d["device"]["kind"], "cpu");
    assert!(d["device"]["usable_bytes"].as_u64().unwrap() > 0);
    assert_eq!(d["devices_needed"], 1, "a 135M model fits in RAM: {d}");
    assert!(d["decode_tok_s_upper"].as_f64().unwrap() > 0.0);
}

/// A model given as its `config.json` (or a folder holding it) plans exactly like the catalog
/// entry built from the same file.
#[test]
fn config_json_and_folder_plan_like_the_catalog() {
    let entry = forja_planner::model_catalog::find_model("qwen2.5-7b-instruct").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    std::fs::write(&config, serde_json::to_string(&entry.config).unwrap()).unwrap();
    let args = [
        "--quant", "q4_k_m", "--ctx", "4096", "--gpu", "4090", "--json",
    ];
    let memory = |model: &str| {
        let mut a = vec!["plan", model];
        a.extend(args);
        let v: serde_json::Value = serde_json::from_str(&ok(&a)).unwrap();
        (v["memory"].clone(), v["model"]["params"].clone())
    };
    let from_catalog = memory("qwen2.5-7b-instruct");
    assert_eq!(memory(config.to_str().unwrap()), from_catalog);
    assert_eq!(memory(dir.path().to_str().unwrap()), from_catalog);
}

fn forja_stdin(args: &[&str], stdin: &str) -> Run {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_forja"))
        .args(args)
        .env("FORJA_LOG", "off")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn run_answers_one_prompt_from_the_argument_or_stdin() {
    let model = testdata_file("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf");
    let model = model.to_str().unwrap();
    let args = [
        "run",
        model,
        "What is 2+2? Answer with one number.",
        "--temperature",
        "0",
        "--max-tokens",
        "8",
        "-v",
    ];
    let r = forja(&args);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains('4'), "{}", r.stdout);
    assert!(
        r.stderr.contains("tok/s"),
        "--verbose prints speeds: {}",
        r.stderr
    );
    let r = forja_stdin(
        &["run", model, "--temperature", "0", "--max-tokens", "8"],
        "What is 2+2? Answer with one number.\n",
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains('4'), "{}", r.stdout);
}

#[test]
fn run_chats_with_commands_history_and_multiline_input() {
    let model = testdata_file("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf");
    let session = "/set temperature 0\n/set max_tokens 12\n/system You answer with one word.\n\
                   \"\"\"\nWhat color is the sky\non a clear day?\n\"\"\"\n/stats\n/set top_p 7\n/bogus\n/clear\n/bye\n";
    let r = forja_stdin(&["run", model.to_str().unwrap(), "--interactive"], session);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains("temperature = 0") && r.stdout.contains("system prompt set"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.to_lowercase().contains("blue"), "{}", r.stdout);
    assert!(
        r.stdout.contains("generation:") && r.stdout.contains("conversation cleared"),
        "{}",
        r.stdout
    );
    assert!(
        r.stderr.contains("top_p 7 outside 0..=1") && r.stderr.contains("unknown command /bogus"),
        "{}",
        r.stderr
    );
}

#[test]
fn run_reports_unusable_models_clearly() {
    let tiny = forja_testkit::fixtures_dir().join("tiny/llama");
    let e = fails(&["run", tiny.to_str().unwrap(), "hi"]);
    assert!(e.contains("tokenizer.json is missing"), "{e}");
    let e = fails(&["run", "/nonexistent/model.gguf", "hi"]);
    assert!(e.contains("no such file or folder"), "{e}");
    let bad = tempfile::NamedTempFile::with_suffix(".gguf").unwrap();
    std::fs::write(bad.path(), b"GGUF\x03\0\0\0").unwrap();
    let e = fails(&["run", bad.path().to_str().unwrap(), "hi"]);
    assert!(e.contains("truncated"), "{e}");
    let model = testdata_file("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf");
    let e = fails(&["run", model.to_str().unwrap(), "hi", "--top-p", "2"]);
    assert!(e.contains("top_p 2 outside"), "{e}");
}

/// `forja bench model MODEL ARGS --json`, parsed: one result per test.
fn bench_json(model: &std::path::Path, args: &[&str]) -> Vec<serde_json::Value> {
    let mut all = vec!["bench", "model", model.to_str().unwrap()];
    all.extend(args);
    all.push("--json");
    let v: serde_json::Value = serde_json::from_str(&ok(&all)).unwrap();
    v.as_array().unwrap().clone()
}

fn test_names(results: &[serde_json::Value]) -> Vec<&str> {
    results
        .iter()
        .map(|r| r["test"].as_str().unwrap())
        .collect()
}

#[test]
fn bench_model_times_prompt_and_generation() {
    let model = testdata_file("SmolLM2-135M-Instruct.Q4_1.gguf");
    let v = bench_json(&model, &["-p", "16,32", "-n", "4", "-r", "2"]);
    assert_eq!(test_names(&v), ["pp16", "pp32", "tg4"]);
    for r in &v {
        assert_eq!(r["samples_ns"].as_array().unwrap().len(), 2);
        assert!(r["avg_tokens_per_s"].as_f64().unwrap() > 0.0);
        assert_eq!(r["params"], 134_515_008u64);
    }
    let e = fails(&["bench", "model", model.to_str().unwrap(), "-p", "100000"]);
    assert!(
        e.contains("between 1 and the model's context of 8192"),
        "{e}"
    );
    let e = fails(&["bench", "model", model.to_str().unwrap(), "-r", "0"]);
    assert!(e.contains("invalid --repetitions 0"), "{e}");
    // 0 skips a kind of test, as llama-bench's `-p 0`; nothing left to time is an error.
    let v = bench_json(&model, &["-p", "0", "-n", "3", "-r", "1"]);
    assert_eq!(test_names(&v), ["tg3"]);
    let e = fails(&[
        "bench",
        "model",
        model.to_str().unwrap(),
        "-p",
        "0",
        "-n",
        "0",
    ]);
    assert!(e.contains("nothing to time"), "{e}");
}

#[test]
fn run_prints_logprobs_stops_on_strings_and_bounds_the_context() {
    let model = testdata_file("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf");
    let model = model.to_str().unwrap();
    let base = ["run", model, "Count from 1 to 9, separated by commas."];
    let greedy = ["--temperature", "0", "--max-tokens", "24"];
    let r = forja(&[&base[..], &greedy[..], &["--logprobs", "2"]].concat());
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("1, 2, 3"), "{}", r.stdout);
    let rows: Vec<&str> = r
        .stderr
        .lines()
        .skip_while(|l| !l.starts_with("token\t"))
        .collect();
    assert_eq!(rows[0], "token\tlogprob\talternatives");
    // Greedy: every chosen token is the first alternative, with the same log-probability.
    for row in &rows[1..] {
        let cols: Vec<&str> = row.split('\t').collect();
        let lp: f32 = cols[1].parse().unwrap();
        assert!(lp <= 0.0, "{row}");
        assert!(
            cols[2].starts_with(&format!("{} {}", cols[0], cols[1])),
            "{row}"
        );
        assert_eq!(cols[2].split(", ").count(), 2, "{row}");
    }
    let r = forja(&[&base[..], &greedy[..], &["--stop", "4"]].concat());
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains("3, ") && !r.stdout.contains('4'),
        "{}",
        r.stdout
    );
    let e = fails(&[&base[..], &greedy[..], &["--ctx", "8"]].concat());
    assert!(e.contains("this model's context holds 8"), "{e}");
}
