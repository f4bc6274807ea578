//! Prometheus metrics of one server: counters and histograms kept here (one registry per server,
//! no process-wide state), gauges read from the engine at scrape time, rendered in the text
//! exposition format.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use forja_engine::serving::Engine;

use crate::models::{ModelPool, Runner};

/// Bucket bounds in seconds for latency histograms.
const LATENCY_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

#[derive(Debug)]
pub struct Histogram {
    counts: Vec<AtomicU64>,
    /// Sum in microseconds.
    sum_us: AtomicU64,
    count: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: LATENCY_BUCKETS.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_us: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn observe(&self, secs: f64) {
        for (bound, c) in LATENCY_BUCKETS.iter().zip(&self.counts) {
            if secs <= *bound {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.sum_us
            .fetch_add((secs * 1e6).max(0.0) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (bound, c) in LATENCY_BUCKETS.iter().zip(&self.counts) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{bound}\"}} {}",
                c.load(Ordering::Relaxed)
            );
        }
        let n = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {n}");
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {n}");
    }
}

/// Everything `/metrics` reports besides the engine's live gauges.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Requests by route and HTTP status.
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    /// Generation requests by model and adapter ("" = the base model).
    model_requests: Mutex<BTreeMap<(String, String), u64>>,
    pub prompt_tokens: AtomicU64,
    pub generated_tokens: AtomicU64,
    pub ttft: Histogram,
    pub inter_token: Histogram,
    pub e2e: Histogram,
}

impl Metrics {
    pub fn count_request(&self, route: &str, status: u16) {
        if let Ok(mut m) = self.requests.lock() {
            *m.entry((route.to_string(), status)).or_default() += 1;
        }
    }

    /// A generation request for `model` with `adapter` ("" for none).
    pub fn count_model_request(&self, model: &str, adapter: &str) {
        if let Ok(mut m) = self.model_requests.lock() {
            *m.entry((model.to_string(), adapter.to_string()))
                .or_default() += 1;
        }
    }

    /// The text exposition of every metric, with `engine`'s gauges read now.
    pub fn render(&self, pool: &ModelPool) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        let _ = writeln!(
            out,
            "# HELP forja_http_requests_total HTTP requests by route and status.\n\
             # TYPE forja_http_requests_total counter"
        );
        if let Ok(m) = self.requests.lock() {
            for ((route, status), n) in m.iter() {
                let _ = writeln!(
                    out,
                    "forja_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP forja_model_requests_total Generation requests by model and LoRA adapter \
             (adapter=\"\" for the base model).\n\
             # TYPE forja_model_requests_total counter"
        );
        if let Ok(m) = self.model_requests.lock() {
            for ((model, adapter), n) in m.iter() {
                let _ = writeln!(
                    out,
                    "forja_model_requests_total{{model=\"{model}\",adapter=\"{adapter}\"}} {n}"
                );
            }
        }
        // Engine numbers, one line per loaded model.
        let runners: Vec<(String, Runner)> = pool
            .entries
            .iter()
            .filter_map(|e| e.loaded().map(|(runner, _)| (e.name.clone(), runner)))
            .collect();
        let loaded: Vec<(String, Engine)> = runners
            .iter()
            .filter_map(|(name, r)| r.chat().map(|e| (name.clone(), e.clone())))
            .collect();
        let per_model =
            |out: &mut String, name: &str, kind: &str, help: &str, v: &dyn Fn(&Engine) -> f64| {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
                for (model, engine) in &loaded {
                    let _ = writeln!(out, "{name}{{model=\"{model}\"}} {}", v(engine));
                }
            };
        let load = |a: &std::sync::atomic::AtomicUsize| a.load(Ordering::Relaxed) as f64;
        let load64 = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed) as f64;
        let _ = writeln!(
            out,
            "# HELP forja_models_loaded Models loaded now.\n# TYPE forja_models_loaded gauge\n\
             forja_models_loaded {}",
            runners.len()
        );
        per_model(
            &mut out,
            "forja_sched_waiting_requests",
            "gauge",
            "Requests admitted and waiting for their first step.",
            &|e| load(&e.gauges.waiting),
        );
        per_model(
            &mut out,
            "forja_sched_running_requests",
            "gauge",
            "Requests with a sequence in the running batch.",
            &|e| load(&e.gauges.running),
        );
        // Every model's queue, embedding models included.
        let _ = writeln!(
            out,
            "# HELP forja_engine_pending_requests Requests admitted and not finished (queue \
             depth).\n# TYPE forja_engine_pending_requests gauge"
        );
        for (model, runner) in &runners {
            let _ = writeln!(
                out,
                "forja_engine_pending_requests{{model=\"{model}\"}} {}",
                runner.pending()
            );
        }
        per_model(
            &mut out,
            "forja_kv_blocks_used",
            "gauge",
            "KV cache blocks held by sequences.",
            &|e| load(&e.gauges.kv_blocks_used),
        );
        per_model(
            &mut out,
            "forja_kv_blocks_free",
            "gauge",
            "KV cache blocks free (cached prefixes included, evictable).",
            &|e| load(&e.gauges.kv_blocks_free),
        );
        per_model(
            &mut out,
            "forja_kv_block_size_tokens",
            "gauge",
            "Tokens per KV cache block.",
            &|e| e.pool.block_size as f64,
        );
        per_model(
            &mut out,
            "forja_kv_pool_bytes",
            "gauge",
            "Bytes of the preallocated KV cache pool.",
            &|e| e.pool.bytes as f64,
        );
        per_model(
            &mut out,
            "forja_kv_prefix_cache_hit_ratio",
            "gauge",
            "Prompt tokens found in the prefix cache over prompt tokens looked up.",
            &|e| {
                let q = load64(&e.gauges.prefix_queried_tokens);
                if q == 0.0 {
                    0.0
                } else {
                    load64(&e.gauges.prefix_hit_tokens) / q
                }
            },
        );
        per_model(
            &mut out,
            "forja_kv_prefix_cache_hit_tokens_total",
            "counter",
            "Prompt tokens found in the prefix cache.",
            &|e| load64(&e.gauges.prefix_hit_tokens),
        );
        per_model(
            &mut out,
            "forja_sched_steps_total",
            "counter",
            "Engine steps run.",
            &|e| load64(&e.gauges.steps),
        );
        per_model(
            &mut out,
            "forja_sched_preemptions_total",
            "counter",
            "Sequences preempted (recomputed later) because KV blocks ran out.",
            &|e| load64(&e.gauges.preemptions),
        );
        for (phase, help, pick) in [
            (
                "model",
                "in the model (the step on its device, logits back on the host included)",
                (|e: &Engine| &e.gauges.model_micros) as fn(&Engine) -> &AtomicU64,
            ),
            ("sample", "sampling the next tokens", |e: &Engine| {
                &e.gauges.sample_micros
            }),
            (
                "deliver",
                "handing tokens to requests (text, stop strings, events)",
                |e: &Engine| &e.gauges.deliver_micros,
            ),
        ] {
            per_model(
                &mut out,
                &format!("forja_engine_{phase}_seconds_total"),
                "counter",
                &format!("Seconds the engine spent {help}."),
                &|e| load64(pick(e)) / 1e6,
            );
        }
        counter(
            &mut out,
            "forja_tokens_prompt_total",
            "Prompt tokens of finished requests (embedding inputs included).",
            self.prompt_tokens.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "forja_tokens_generated_total",
            "Tokens generated.",
            self.generated_tokens.load(Ordering::Relaxed),
        );
        self.ttft.render(
            &mut out,
            "forja_request_time_to_first_token_seconds",
            "Time from a request's arrival to its first generated token.",
        );
        self.inter_token.render(
            &mut out,
            "forja_request_inter_token_seconds",
            "Time between consecutive generated tokens of a request.",
        );
        self.e2e.render(
            &mut out,
            "forja_request_duration_seconds",
            "Time from a request's arrival to its last token.",
        );
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code fails loudly")]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::default();
        h.observe(0.007);
        h.observe(0.3);
        h.observe(500.0);
        let mut out = String::new();
        h.render(&mut out, "x", "help");
        assert!(out.contains("x_bucket{le=\"0.005\"} 0"), "{out}");
        assert!(out.contains("x_bucket{le=\"0.01\"} 1"), "{out}");
        assert!(out.contains("x_bucket{le=\"0.5\"} 2"), "{out}");
        assert!(out.contains("x_bucket{le=\"120\"} 2"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 3"), "{out}");
        assert!(out.contains("x_count 3"), "{out}");
    }
}
