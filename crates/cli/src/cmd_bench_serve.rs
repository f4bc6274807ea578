//! `forja bench serve`: load on an OpenAI-compatible server on this machine (forja's own or
//! another, such as llama.cpp's llama-server) through streamed `/v1/completions` requests, and
//! what it measured: time to first token, inter-token latency, end-to-end latency, throughput
//! and goodput.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use clap::builder::RangedU64ValueParser;
use forja_engine::sampler::{Rng, mix64};
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use reqwest::{Client, Url};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::output::{out, outln};
use crate::table::Table;

/// Load comes from `--clients` closed-loop clients, or from `--rate` Poisson arrivals.
#[derive(Debug, Args, Serialize)]
pub struct ServeBenchArgs {
    /// Server address; only this machine's loopback is allowed (127.0.0.1, localhost, ::1)
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Model to request (default: the first id listed by GET URL/v1/models)
    #[arg(long)]
    model: Option<String>,
    /// Sent as `Authorization: Bearer KEY`
    #[arg(long, env = "FORJA_API_KEY", hide_env_values = true)]
    #[serde(skip)]
    api_key: Option<String>,
    /// Closed loop: this many clients, each sending its next request when its last one ends
    #[arg(long, default_value_t = 1, conflicts_with = "rate", value_parser = count(4096))]
    clients: usize,
    /// Open loop: requests per second with Poisson arrivals, however fast the server answers
    #[arg(long, value_name = "R", value_parser = positive)]
    rate: Option<f64>,
    /// Requests to send in all
    #[arg(long, default_value_t = 64, value_parser = count(1_000_000))]
    requests: usize,
    /// Time limit in seconds: no request starts after it and requests still running are cut
    #[arg(long = "duration", default_value_t = 300.0, value_name = "SECS", value_parser = positive)]
    duration_limit_s: f64,
    /// Prompt length in tokens (roughly: the prompt is that many common words)
    #[arg(long, default_value_t = 128, value_parser = count(1 << 20))]
    input_tokens: usize,
    /// Tokens to generate per request (max_tokens; a server may stop sooner at end of text)
    #[arg(long, default_value_t = 64, value_parser = count(1 << 20))]
    output_tokens: usize,
    /// Draw each prompt length uniformly within ± this fraction of --input-tokens
    #[arg(long, default_value_t = 0.0, value_name = "FRACTION", value_parser = fraction)]
    input_jitter: f64,
    /// Draw each max_tokens uniformly within ± this fraction of --output-tokens
    #[arg(long, default_value_t = 0.0, value_name = "FRACTION", value_parser = fraction)]
    output_jitter: f64,
    /// Words at the start of every prompt that all requests share (to see prefix caching);
    /// otherwise each prompt starts with a number of its own
    #[arg(long, default_value_t = 0, value_name = "WORDS")]
    shared_prefix: usize,
    /// Seed of the sampled lengths, the arrivals and the numbers in the prompts (a new seed
    /// also keeps a server's prefix cache from an earlier run out of the measurement)
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Goodput counts only requests whose time to first token is at most this
    #[arg(long, value_name = "MS", value_parser = positive)]
    slo_ttft_ms: Option<f64>,
    /// Goodput counts only requests whose mean inter-token latency is at most this
    #[arg(long, value_name = "MS", value_parser = positive)]
    slo_itl_ms: Option<f64>,
    /// Print JSON
    #[arg(long)]
    #[serde(skip)]
    json: bool,
    /// Also write the JSON report to this file
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    out: Option<PathBuf>,
}

fn count(max: u64) -> RangedU64ValueParser<usize> {
    RangedU64ValueParser::new().range(1..=max)
}

/// A number above 0: seconds, requests per second, milliseconds.
fn positive(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("`{s}` is not a number above 0")),
    }
}

fn fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..1.0).contains(&v) => Ok(v),
        _ => Err(format!("`{s}` is not a fraction in [0, 1)")),
    }
}

/// The server's base URL (`http://host:port/`, a trailing `/v1` dropped) when its host is this
/// machine's loopback: a load generator has no business with other people's servers.
fn base_url(s: &str) -> Result<Url> {
    let mut url = Url::parse(s)
        .with_context(|| format!("--url {s} is not a URL (example: http://127.0.0.1:8080)"))?;
    if url.scheme() != "http" {
        bail!("--url {s}: use http:// (servers on this machine speak plain HTTP)");
    }
    let host = url.host_str().unwrap_or_default();
    if !(host.eq_ignore_ascii_case("localhost") || host == "127.0.0.1" || host == "[::1]") {
        bail!(
            "--url {s}: the host must be this machine's loopback (127.0.0.1, localhost or ::1); \
             bench serve does not send load to other machines"
        );
    }
    let path = url.path().trim_end_matches('/');
    let path = path.strip_suffix("/v1").unwrap_or(path).to_string();
    url.set_path(&format!("{path}/"));
    url.set_query(None);
    url.set_fragment(None);
    Ok(url)
}

/// Arrival times in seconds from the start of a Poisson process of `rate` per second.
fn poisson_arrivals(n: usize, rate: f64, seed: u64) -> Vec<f64> {
    let mut rng = Rng::new(mix64(seed ^ 0x5EED_A441_7A15));
    let mut t = 0.0;
    (0..n)
        .map(|_| {
            t += -(1.0 - rng.next_f64()).ln() / rate;
            t
        })
        .collect()
}

/// `n`, or a length drawn uniformly within ± `jitter` × `n` (never below 1).
fn sample_len(rng: &mut Rng, n: usize, jitter: f64) -> usize {
    if jitter <= 0.0 {
        return n;
    }
    let lo = (n as f64 * (1.0 - jitter)).round().max(1.0);
    let hi = (n as f64 * (1.0 + jitter)).round().max(lo);
    (lo + (rng.next_f64() * (hi - lo + 1.0)).floor()).min(hi) as usize
}

/// Common words, most of them one token in the usual tokenizers.
const WORDS: &[&str] = &[
    "the", "river", "bright", "stone", "carried", "over", "small", "green", "hills", "and",
    "quiet", "town", "where", "people", "often", "walked", "before", "morning", "light", "came",
    "through", "old", "windows", "while", "birds", "sang", "near", "warm", "bread", "from", "a",
    "baker", "who", "knew", "every", "name", "in", "that", "place", "so", "children", "ran", "to",
    "see", "boats", "on", "water", "under", "clear", "blue", "sky", "until", "evening", "rain",
    "made", "roads", "soft", "again", "with", "music", "after", "long", "days", "work",
];

/// The `k`th word of the filler text; each pass over the list is shifted so the text does not
/// repeat with a short period.
fn word(k: usize) -> &'static str {
    WORDS[(k + k / WORDS.len() * 7) % WORDS.len()]
}

/// A number that differs between requests of one run, and between seeds.
fn request_number(seed: u64, index: usize) -> String {
    format!("{}{index:06}", 100 + mix64(seed) % 900)
}

/// A prompt of about `words` words: the `shared` words that every request starts with, then a
/// number unique to this request, then filler that starts at a place of its own.
fn build_prompt(seed: u64, index: usize, words: usize, shared: usize) -> String {
    let mut p: String = (0..shared).map(|k| format!("{} ", word(k))).collect();
    p.push_str(&request_number(seed, index));
    let start = (mix64(seed.wrapping_add(index as u64)) % 4096) as usize;
    for k in 0..words.saturating_sub(shared + 1) {
        p.push(' ');
        p.push_str(word(start + k));
    }
    p
}

/// Each request's prompt and max_tokens, all drawn before the run starts.
fn request_specs(a: &ServeBenchArgs) -> Vec<(String, usize)> {
    let mut rng = Rng::new(mix64(a.seed));
    (0..a.requests)
        .map(|i| {
            let words = sample_len(&mut rng, a.input_tokens, a.input_jitter);
            let max_tokens = sample_len(&mut rng, a.output_tokens, a.output_jitter);
            (build_prompt(a.seed, i, words, a.shared_prefix), max_tokens)
        })
        .collect()
}

/// Server-sent events from bytes that may arrive split anywhere: the `data` of each event.
#[derive(Debug, Default)]
struct SseParser {
    buf: Vec<u8>,
    data: Option<String>,
}

impl SseParser {
    fn push(&mut self, bytes: &[u8], out: &mut Vec<String>) {
        self.buf.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(n) = self.buf[start..].iter().position(|&b| b == b'\n') {
            sse_line(&mut self.data, &self.buf[start..start + n], out);
            start += n + 1;
        }
        self.buf.drain(..start);
    }

    /// The end of the stream: an unterminated last line or event still counts.
    fn finish(&mut self, out: &mut Vec<String>) {
        self.push(b"\n\n", out);
    }
}

fn sse_line(data: &mut Option<String>, line: &[u8], out: &mut Vec<String>) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() {
        out.extend(data.take());
        return;
    }
    let text = String::from_utf8_lossy(line);
    let value = match text.split_once(':') {
        Some(("data", v)) => v.strip_prefix(' ').unwrap_or(v),
        None if text == "data" => "",
        _ => return,
    };
    *data = Some(match data.take() {
        Some(d) => format!("{d}\n{value}"),
        None => value.to_string(),
    });
}

/// What one event of a completion stream says.
#[derive(Debug, PartialEq)]
enum Payload {
    Done,
    Error(String),
    /// Text (possibly empty) and, in the last chunk, the usage's completion tokens.
    Chunk(String, Option<u64>),
}

fn interpret(data: &str) -> Payload {
    let data = data.trim();
    if data == "[DONE]" {
        return Payload::Done;
    }
    let v: Value = match serde_json::from_str(data) {
        Ok(v) => v,
        Err(e) => return Payload::Error(format!("malformed stream chunk ({e}): {}", clip(data))),
    };
    if let Some(e) = v.get("error").filter(|e| !e.is_null()) {
        return Payload::Error(error_message(e));
    }
    let choices = v["choices"].as_array().into_iter().flatten();
    let text = choices.filter_map(|c| c["text"].as_str()).collect();
    Payload::Chunk(text, v["usage"]["completion_tokens"].as_u64())
}

fn error_message(e: &Value) -> String {
    match (e.as_str(), e["message"].as_str()) {
        (Some(s), _) | (None, Some(s)) => s.to_string(),
        _ => clip(&e.to_string()),
    }
}

/// The message of an HTTP error body: OpenAI's `{"error":{"message":…}}` or the raw text.
fn body_message(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v.get("error").map(error_message))
        .unwrap_or_else(|| clip(body.trim()))
}

fn clip(s: &str) -> String {
    match s.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// The client (which sends the API key), the completions URL and the model.
struct Target(Client, Url, String);

/// One request as the client saw it; times in seconds.
#[derive(Debug, Clone, Default)]
struct Sample {
    /// Why it failed (cut at the time limit included); `None` when it succeeded.
    error: Option<String>,
    ttft: Option<f64>,
    itl: Vec<f64>,
    e2e: f64,
    output_tokens: u64,
}

async fn run_request(t: &Target, spec: &(String, usize), deadline: Instant) -> Sample {
    let mut s = Sample::default();
    let start = Instant::now();
    let r = tokio::time::timeout_at(deadline, stream_request(t, spec, start, &mut s)).await;
    s.e2e = start.elapsed().as_secs_f64();
    s.error = match r {
        Ok(r) => r.err(),
        Err(_) => Some("still running at the --duration limit".to_string()),
    };
    s
}

/// Sends one streamed completion and times its text chunks into `s`.
async fn stream_request(
    t: &Target,
    (prompt, max_tokens): &(String, usize),
    start: Instant,
    s: &mut Sample,
) -> Result<(), String> {
    let body = json!({
        "model": t.2, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
        "stream": true, "stream_options": {"include_usage": true},
    });
    let sent = t.0.post(t.1.clone()).json(&body).send().await;
    let mut resp = sent.map_err(|e| format!("{:#}", anyhow!(e)))?;
    let status = resp.status();
    if !status.is_success() {
        let text = resp.text().await.unwrap_or_default();
        return Err(format!("HTTP {status}: {}", body_message(&text)));
    }
    let (mut parser, mut events) = (SseParser::default(), Vec::new());
    let (mut last_text, mut text_chunks, mut usage) = (None::<Instant>, 0, None);
    loop {
        let bytes = resp.chunk().await;
        let bytes = bytes.map_err(|e| format!("reading the stream: {:#}", anyhow!(e)))?;
        match &bytes {
            Some(b) => parser.push(b, &mut events),
            None => parser.finish(&mut events),
        }
        let now = Instant::now();
        for data in events.drain(..) {
            let (text, tokens) = match interpret(&data) {
                Payload::Done => {
                    s.output_tokens = usage.unwrap_or(text_chunks);
                    return Ok(());
                }
                Payload::Error(m) => return Err(format!("error in the stream: {m}")),
                Payload::Chunk(text, tokens) => (text, tokens),
            };
            usage = tokens.or(usage);
            if !text.is_empty() {
                text_chunks += 1;
                match last_text {
                    None => s.ttft = Some((now - start).as_secs_f64()),
                    Some(prev) => s.itl.push((now - prev).as_secs_f64()),
                }
                last_text = Some(now);
            }
        }
        if bytes.is_none() {
            return Err("the stream ended without [DONE]".to_string());
        }
    }
}

type Specs = Arc<Vec<(String, usize)>>;

/// `seconds` after `start`, if that is representable.
fn after(start: Instant, seconds: f64) -> Option<Instant> {
    start.checked_add(Duration::try_from_secs_f64(seconds).ok()?)
}

/// Closed loop: each client sends the next request as soon as its last one ends.
fn closed_loop(t: Arc<Target>, specs: Specs, clients: usize, deadline: Instant) -> Tasks {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    for _ in 0..clients.min(specs.len()) {
        let (t, specs, next) = (t.clone(), specs.clone(), next.clone());
        tasks.spawn(async move {
            let mut done = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= specs.len() || Instant::now() >= deadline {
                    return done;
                }
                done.push((i, run_request(&t, &specs[i], deadline).await));
            }
        });
    }
    tasks
}

type Tasks = JoinSet<Vec<(usize, Sample)>>;

/// Open loop: requests start at their arrival times whether or not earlier ones have ended.
async fn open_loop(t: Arc<Target>, specs: Specs, at: &[f64], deadline: Instant) -> Tasks {
    let (start, mut tasks) = (Instant::now(), JoinSet::new());
    for (i, &at) in at.iter().enumerate().take(specs.len()) {
        let Some(when) = after(start, at).filter(|w| *w < deadline) else {
            break;
        };
        tokio::time::sleep_until(when).await;
        let (t, specs) = (t.clone(), specs.clone());
        tasks.spawn(async move { vec![(i, run_request(&t, &specs[i], deadline).await)] });
    }
    tasks
}

/// Sends the load; the samples in request order and the wall time in seconds.
async fn drive(a: &ServeBenchArgs, target: Target) -> Result<(Vec<Sample>, f64)> {
    let (target, specs) = (Arc::new(target), Arc::new(request_specs(a)));
    let start = Instant::now();
    let deadline = after(start, a.duration_limit_s).context("--duration is too long")?;
    let mut tasks = match a.rate {
        Some(rate) => {
            let arrivals = poisson_arrivals(a.requests, rate, a.seed);
            open_loop(target, specs, &arrivals, deadline).await
        }
        None => closed_loop(target, specs, a.clients, deadline),
    };
    let mut samples = Vec::new();
    while let Some(r) = tasks.join_next().await {
        samples.extend(r.context("a benchmark client stopped unexpectedly")?);
    }
    let wall = start.elapsed().as_secs_f64();
    samples.sort_by_key(|(i, _)| *i);
    Ok((samples.into_iter().map(|(_, s)| s).collect(), wall))
}

/// The first model id that GET /v1/models lists.
async fn first_model(client: &Client, base: &Url) -> Result<String> {
    let url = base.join("v1/models")?;
    let hint = "is a server running? `forja serve MODEL` starts one";
    let sent = client.get(url.clone()).send().await;
    let resp = sent.with_context(|| format!("cannot reach {url} ({hint})"))?;
    let status = resp.status();
    let text = resp.text().await.context("reading the model list")?;
    if !status.is_success() {
        bail!("GET {url} answered HTTP {status}: {}", body_message(&text));
    }
    let v: Value = serde_json::from_str(&text).unwrap_or_default();
    let id = v["data"][0]["id"].as_str().map(str::to_string);
    id.with_context(|| format!("GET {url} lists no model; name one with --model"))
}

/// The `p`th percentile (0..=100) of ascending `sorted`, interpolated between nearest ranks.
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let rank = (p / 100.0).clamp(0.0, 1.0) * last as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64))
}

/// Mean and percentiles in milliseconds of `seconds`; null where there was nothing to measure.
fn stats_ms(seconds: impl Iterator<Item = f64>) -> Value {
    let mut v: Vec<f64> = seconds.map(|s| s * 1e3).collect();
    v.sort_by(f64::total_cmp);
    let mean = (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
    let [p50, p90, p99] = [50.0, 90.0, 99.0].map(|p| percentile(&v, p));
    json!({"mean": mean, "p50": p50, "p90": p90, "p99": p99})
}

/// The report: settings (the arguments, with the model and URL as used, never the key), counts,
/// rates, latencies and each distinct error with its count. Only requests that succeeded count
/// in rates and latencies; a request still running at the time limit counts as failed.
fn summarize(a: &ServeBenchArgs, samples: &[Sample], wall_s: f64) -> Value {
    let ok: Vec<&Sample> = samples.iter().filter(|s| s.error.is_none()).collect();
    let mut errors = BTreeMap::<String, usize>::new();
    for e in samples.iter().filter_map(|s| s.error.as_ref()) {
        let known = errors.len() < 20 || errors.contains_key(e);
        *errors
            .entry(if known { e } else { "(other errors)" }.to_string())
            .or_default() += 1;
    }
    let output_tokens: u64 = ok.iter().map(|s| s.output_tokens).sum();
    let per_s = |n: f64| if wall_s > 0.0 { n / wall_s } else { 0.0 };
    // A request meets the SLOs when it started within --slo-ttft-ms and averaged at most
    // --slo-itl-ms between its text chunks.
    let meets = |s: &Sample| {
        let mean_itl = s.itl.iter().sum::<f64>() / s.itl.len().max(1) as f64;
        a.slo_ttft_ms
            .is_none_or(|slo| s.ttft.is_some_and(|t| t * 1e3 <= slo))
            && a.slo_itl_ms.is_none_or(|slo| mean_itl * 1e3 <= slo)
    };
    let slo_given = a.slo_ttft_ms.is_some() || a.slo_itl_ms.is_some();
    let meeting = slo_given.then(|| ok.iter().filter(|s| meets(s)).count());
    let mut settings = serde_json::to_value(a).unwrap_or_default();
    if a.rate.is_some() {
        settings["clients"] = Value::Null;
    }
    json!({
        "settings": settings,
        "requests_ok": ok.len(),
        "requests_failed": samples.len() - ok.len(),
        "requests_not_sent": a.requests - samples.len(),
        "duration_s": wall_s,
        "output_tokens": output_tokens,
        "output_tokens_per_s": per_s(output_tokens as f64),
        "requests_per_s": per_s(ok.len() as f64),
        "ttft_ms": stats_ms(ok.iter().filter_map(|s| s.ttft)),
        "itl_ms": stats_ms(ok.iter().flat_map(|s| s.itl.iter().copied())),
        "e2e_ms": stats_ms(ok.iter().map(|s| s.e2e)),
        "requests_meeting_slo": meeting,
        "goodput_requests_per_s": meeting.map(|n| per_s(n as f64)),
        "errors": errors,
    })
}

/// Writes `text` to a temporary file beside `path`, then renames it: `path` is either complete
/// or untouched.
fn write_atomically(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    let name = path.file_name().context("--out names no file")?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let dir = dir.unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = dir.join(format!(".{}.{}.tmp", name.display(), std::process::id()));
    let written = std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write {}", path.display()));
    }
    Ok(())
}

fn print_report(a: &ServeBenchArgs, r: &Value) {
    let load = match a.rate {
        Some(rate) => format!("open loop at {rate} requests/s"),
        None => format!("closed loop, concurrency {}", a.clients),
    };
    let model = a.model.as_deref().unwrap_or_default();
    let (n, i, o, url) = (a.requests, a.input_tokens, a.output_tokens, &a.url);
    outln!("{model} at {url}: {load}, {n} requests of ~{i} → {o} tokens\n");
    let num = |v: &Value, d: usize| v.as_f64().map_or("-".into(), |x| format!("{x:.d$}"));
    let mut t = Table::new(&["result", "value"]);
    for (label, key, digits) in [
        ("requests ok", "requests_ok", 0),
        ("requests failed", "requests_failed", 0),
        ("not sent in time", "requests_not_sent", 0),
        ("duration (s)", "duration_s", 2),
        ("output tokens", "output_tokens", 0),
        ("output tok/s", "output_tokens_per_s", 2),
        ("requests/s", "requests_per_s", 3),
        ("meeting the SLOs", "requests_meeting_slo", 0),
        ("goodput (req/s)", "goodput_requests_per_s", 3),
    ] {
        t.row(vec![label.to_string(), num(&r[key], digits)]);
    }
    out!("{}\n", t.render());
    let mut t = Table::new(&["latency (ms)", "mean", "p50", "p90", "p99"]);
    for (label, key) in [("TTFT", "ttft_ms"), ("ITL", "itl_ms"), ("E2E", "e2e_ms")] {
        let cells = ["mean", "p50", "p90", "p99"].map(|k| num(&r[key][k], 1));
        t.row(std::iter::once(label.to_string()).chain(cells).collect());
    }
    out!("{}", t.render());
    for (message, count) in r["errors"].as_object().into_iter().flatten() {
        outln!("{count} × {message}");
    }
}

pub fn run(mut a: ServeBenchArgs) -> Result<()> {
    let base = base_url(&a.url)?;
    a.url = base.as_str().trim_end_matches('/').to_string();
    let mut headers = HeaderMap::new();
    if let Some(key) = &a.api_key {
        let mut v = HeaderValue::from_str(&format!("Bearer {key}")).context("invalid --api-key")?;
        v.set_sensitive(true);
        headers.insert(AUTHORIZATION, v);
    }
    let client = Client::builder().no_proxy().default_headers(headers);
    let client = client.build().context("cannot create the HTTP client")?;
    let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let model = match a.model.clone() {
        Some(m) => m,
        None => rt.block_on(first_model(&client, &base))?,
    };
    a.model = Some(model.clone());
    let completions = base.join("v1/completions")?;
    let target = Target(client, completions, model);
    let (samples, wall) = rt.block_on(drive(&a, target))?;
    let report = summarize(&a, &samples, wall);
    let json = serde_json::to_string_pretty(&report)?;
    if let Some(path) = &a.out {
        write_atomically(path, &format!("{json}\n"))?;
    }
    if a.json {
        outln!("{json}");
    } else {
        print_report(&a, &report);
    }
    match report["errors"].as_object().and_then(|e| e.keys().next()) {
        _ if report["requests_ok"] != 0 => Ok(()),
        Some(e) => bail!("no request to {}/v1/completions succeeded: {e}", a.url),
        None => bail!(
            "no request was sent within --duration {}s",
            a.duration_limit_s
        ),
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]
mod tests {
    use super::*;

    fn events(parts: &[&[u8]]) -> Vec<String> {
        let (mut p, mut out) = (SseParser::default(), Vec::new());
        parts.iter().for_each(|b| p.push(b, &mut out));
        p.finish(&mut out);
        out
    }

    const STREAM: &str = concat!(
        ": keep-alive\r\n\r\n",
        "data: {\"choices\":[{\"index\":0,\"text\":\"Olá\"}]}\n\n",
        "event: message\nid: 7\ndata:{\"choices\":[{\"text\":\" 日本\"}]}\r\n\r\n",
        "data: first line\ndata: second line\n\n",
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2}}\n\n",
        "data: {\"error\":{\"message\":\"the engine stopped\",\"type\":\"server_error\"}}\n\n",
        "data: [DONE]\n\n",
    );

    #[test]
    fn sse_events_survive_any_split() {
        let bytes = STREAM.as_bytes();
        let whole = events(&[bytes]);
        let chunk = |t: &str, n| Payload::Chunk(t.to_string(), n);
        let malformed = interpret(&whole[2]);
        assert!(matches!(malformed, Payload::Error(m) if m.contains("malformed")));
        assert_eq!(whole[2], "first line\nsecond line");
        let payloads: Vec<Payload> = whole.iter().map(|d| interpret(d)).collect();
        let want = [chunk("Olá", None), chunk(" 日本", None)];
        assert_eq!(payloads[..2], want);
        let want = [
            chunk("", Some(2)),
            Payload::Error("the engine stopped".into()),
            Payload::Done,
        ];
        assert_eq!(payloads[3..], want);
        for i in 0..=bytes.len() {
            assert_eq!(events(&[&bytes[..i], &bytes[i..]]), whole, "split at {i}");
            for j in (i..=bytes.len()).step_by(5) {
                let parts = [&bytes[..i], &bytes[i..j], &bytes[j..]];
                assert_eq!(events(&parts), whole, "split at {i} and {j}");
            }
        }
        assert_eq!(events(&bytes.chunks(1).collect::<Vec<_>>()), whole);
        assert_eq!(events(&[b"data: [DONE]"]), ["[DONE]"]);
        let busy = interpret(r#"{"error":"busy"}"#);
        assert_eq!(busy, Payload::Error("busy".into()));
        let missing = body_message(r#"{"error":{"message":"no such model"}}"#);
        assert_eq!(missing, "no such model");
        assert_eq!(body_message(" Not Found\n"), "Not Found");
    }

    #[test]
    fn percentiles_interpolate_between_ranks() {
        let v: Vec<f64> = (1..=5).map(f64::from).collect();
        let p = |p| percentile(&v, p).unwrap();
        assert_eq!([p(0.0), p(50.0), p(100.0)], [1.0, 3.0, 5.0]);
        assert!((p(90.0) - 4.6).abs() < 1e-12 && (p(99.0) - 4.96).abs() < 1e-12);
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
        let s = stats_ms([0.003, 0.001, 0.002, 0.010].into_iter());
        assert_eq!([&s["mean"], &s["p50"]], [4.0, 2.5]);
        let (p90, p99) = (s["p90"].as_f64().unwrap(), s["p99"].as_f64().unwrap());
        assert!(2.5 <= p90 && p90 <= p99 && p99 <= 10.0, "{s}");
        let none = json!({"mean": null, "p50": null, "p90": null, "p99": null});
        assert_eq!(stats_ms(std::iter::empty()), none);
    }

    #[test]
    fn only_loopback_urls_are_accepted() {
        for (given, base) in [
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080/"),
            ("http://localhost:8080/v1", "http://localhost:8080/"),
            ("http://LOCALHOST:9/v1/", "http://localhost:9/"),
            ("http://[::1]:8080/", "http://[::1]:8080/"),
            ("http://127.0.0.1/proxy/v1?x=1", "http://127.0.0.1/proxy/"),
        ] {
            assert_eq!(base_url(given).unwrap().as_str(), base, "{given}");
        }
        let remote = "http://10.0.0.1:8080 http://example.com http://127.0.0.2:8080 \
                      http://0.0.0.0:8080 http://[::2]:80 http://localhost.example.com";
        for url in remote.split_whitespace() {
            let e = base_url(url).unwrap_err().to_string();
            assert!(e.contains("must be this machine's loopback"), "{url}: {e}");
        }
        let e = base_url("https://127.0.0.1:8080").unwrap_err().to_string();
        assert!(e.contains("use http://"), "{e}");
        let e = base_url("127.0.0.1:8080").unwrap_err().to_string();
        assert!(e.contains("is not a URL"), "{e}");
    }

    #[test]
    fn poisson_arrivals_are_seeded_and_keep_the_rate() {
        let a = poisson_arrivals(20_000, 4.0, 42);
        assert_eq!(a, poisson_arrivals(20_000, 4.0, 42));
        assert_ne!(a[..10], poisson_arrivals(10, 4.0, 43));
        assert!(a[0] > 0.0 && a.windows(2).all(|w| w[0] < w[1]));
        assert!((a[a.len() - 1] / a.len() as f64 - 0.25).abs() < 0.01);
        // Exponential gaps: about 1/e of them are longer than the mean.
        let gaps = std::iter::once(a[0]).chain(a.windows(2).map(|w| w[1] - w[0]));
        let long = gaps.filter(|&g| g > 0.25).count() as f64 / a.len() as f64;
        assert!((long - (-1.0f64).exp()).abs() < 0.02, "{long}");
    }

    #[test]
    fn lengths_jitter_within_bounds_and_repeat_with_the_seed() {
        let draw = |seed| {
            let mut rng = Rng::new(mix64(seed));
            let v: Vec<usize> = (0..2000).map(|_| sample_len(&mut rng, 100, 0.2)).collect();
            v
        };
        let v = draw(1);
        assert!(v == draw(1) && v != draw(2));
        assert!(v.iter().all(|n| (80..=120).contains(n)) && v.contains(&80) && v.contains(&120));
        assert_eq!(sample_len(&mut Rng::new(1), 64, 0.0), 64);
        assert!((0..100).all(|s| sample_len(&mut Rng::new(s), 1, 0.9) >= 1));
    }

    #[test]
    fn prompts_differ_per_request_and_share_a_prefix_when_asked() {
        let words = |seed, i, shared| -> Vec<String> {
            let p = build_prompt(seed, i, 128, shared);
            p.split(' ').map(str::to_string).collect()
        };
        let own: Vec<_> = (0..50).map(|i| words(7, i, 0)).collect();
        for (i, p) in own.iter().enumerate() {
            assert_eq!((p.len(), &p[0]), (128, &request_number(7, i)));
            assert!(
                own[..i].iter().all(|q| q[0] != p[0]),
                "{i} starts like another"
            );
        }
        let distinct: std::collections::HashSet<_> = own[0].iter().collect();
        assert!(distinct.len() > 40);
        assert_eq!(words(7, 3, 0), own[3]);
        assert_ne!(words(8, 3, 0)[0], own[3][0]);
        let shared: Vec<_> = (0..20).map(|i| words(7, i, 100)).collect();
        for p in &shared {
            assert_eq!((p.len(), &p[..100]), (128, &shared[0][..100]));
        }
        assert_ne!(shared[0][100], shared[1][100]);
        let long = build_prompt(7, 5, 10, 30);
        assert!(long.ends_with(&format!(" {}", request_number(7, 5))));
    }

    #[test]
    fn summary_counts_rates_goodput_and_errors() {
        use clap::{Args, FromArgMatches};
        let args = ["x", "--slo-ttft-ms", "200", "--slo-itl-ms", "30"];
        let m = ServeBenchArgs::augment_args(clap::Command::new("x")).get_matches_from(args);
        let a = ServeBenchArgs::from_arg_matches(&m).unwrap();
        let s = |ttft: f64, itl: f64| Sample {
            ttft: Some(ttft),
            itl: vec![itl; 3],
            e2e: ttft + 3.0 * itl,
            output_tokens: 4,
            ..Sample::default()
        };
        let busy = Sample {
            error: Some("HTTP 503: busy".into()),
            ..Sample::default()
        };
        let samples = [s(0.1, 0.01), s(0.3, 0.02), s(0.1, 0.05), busy.clone(), busy];
        let r = summarize(&a, &samples, 2.0);
        let counts = ["requests_ok", "requests_failed", "output_tokens"].map(|k| &r[k]);
        assert_eq!(counts, [3, 2, 12]);
        assert_eq!(r["output_tokens_per_s"], 6.0);
        // Only the first meets both: the second is slow to start, the third slow per token.
        assert_eq!(r["requests_meeting_slo"], 1);
        assert_eq!(r["goodput_requests_per_s"], 0.5);
        assert_eq!(r["errors"], json!({"HTTP 503: busy": 2}));
        assert_eq!(r["settings"]["clients"], 1);
        assert!(r["settings"].get("api_key").is_none());
    }
}
