//! LoRA adapters served per request by a live server over the real SmolLM2 model with two
//! adapters (random matrices on the attention and MLP projections, k and v included): each of
//! `model`, `model+x` and `model+y` answers what the engine alone answers with that adapter
//! applied to the whole model (the `forja run --adapter` path), alone or batched with the others;
//! the prefix cache never hands one adapter's keys and values to another; unknown adapters are
//! 404s that list the known ones; model lists and metrics name the adapters.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use candle_core::{Device, Tensor};
use common::{MODEL, Server, start};
use forja_engine::serving::ServingConfig;
use forja_engine::{
    GenerateParams, LoadedModel, LoraSlot, LoraWeights, Message, SamplingParams, generate,
};
use forja_server::ServerConfig;
use serde_json::{Value, json};

const TARGETS: [&str; 5] = [
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.down_proj",
];

/// SplitMix64 (Steele, Lea, Flood 2014).
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn uniform(n: usize, bound: f32, state: &mut u64) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let r = next(state) >> 40;
            (r as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * bound
        })
        .collect()
}

/// A rank-4 adapter of every TARGETS projection of `model`, values drawn from `seed`.
fn random_adapter(model: &mut LoadedModel, seed: u64) -> LoraWeights {
    let mut state = seed;
    let rank = 4;
    let mut modules = BTreeMap::new();
    for (path, linear) in model.decoder.linears_mut() {
        if !TARGETS.iter().any(|t| path.ends_with(t)) {
            continue;
        }
        let (out_dim, in_dim) = linear.out_in().unwrap();
        let a = uniform(rank * in_dim, 1.0 / (in_dim as f32).sqrt(), &mut state);
        let b = uniform(out_dim * rank, 0.3, &mut state);
        modules.insert(
            path,
            (
                Tensor::from_vec(a, (rank, in_dim), &Device::Cpu).unwrap(),
                Tensor::from_vec(b, (out_dim, rank), &Device::Cpu).unwrap(),
            ),
        );
    }
    LoraWeights {
        modules,
        scale: 2.0,
    }
}

fn load() -> LoadedModel {
    LoadedModel::load(&forja_testkit::testdata_file(MODEL), &Device::Cpu).unwrap()
}

const QUESTIONS: [&str; 3] = [
    "Tell me a story.",
    "What is your favorite food?",
    "Why is the sky blue?",
];

/// A prompt of many KV blocks.
fn long_question() -> String {
    "Here is a list of fruits: apple, banana, cherry, date, elderberry, fig, grape, honeydew, \
     kiwi, lemon, mango, nectarine, orange, papaya, quince, raspberry, strawberry, tangerine. \
     Which of them are yellow? Answer briefly."
        .to_string()
}

/// Greedy answers (12 tokens) of the engine alone for each question, with no adapter, with X
/// and with Y applied to the whole model.
struct Reference {
    /// `[none, x, y][question]`
    answers: [Vec<String>; 3],
}

fn answers(model: &LoadedModel, questions: &[String]) -> Vec<String> {
    questions
        .iter()
        .map(|q| {
            let prompt = model.chat_prompt(&[Message::new("user", q)], None).unwrap();
            let mut cache = model.new_cache();
            let params = GenerateParams {
                sampling: SamplingParams::greedy(),
                max_tokens: 12,
                ..Default::default()
            };
            generate(
                model,
                &prompt,
                &mut cache,
                &mut Vec::new(),
                &params,
                &mut |_| true,
            )
            .unwrap()
            .text
        })
        .collect()
}

fn reference(x: &LoraWeights, y: &LoraWeights, questions: &[String]) -> Reference {
    let mut model = load();
    let none = answers(&model, questions);
    model.decoder.attach_lora(x, LoraSlot::Single).unwrap();
    let with_x = answers(&model, questions);
    model.decoder.clear_lora();
    model.decoder.attach_lora(y, LoraSlot::Single).unwrap();
    let with_y = answers(&model, questions);
    Reference {
        answers: [none, with_x, with_y],
    }
}

/// A server of the model with adapters `x` and `y`, and the reference answers.
fn setup() -> (Server, Reference, Vec<String>) {
    let mut model = load();
    let x = random_adapter(&mut model, 1);
    let y = random_adapter(&mut model, 2);
    assert_eq!(model.add_adapter("x", &x).unwrap(), 1);
    assert_eq!(model.add_adapter("y", &y).unwrap(), 2);
    assert!(model.add_adapter("x", &y).is_err(), "names are unique");
    let mut questions: Vec<String> = QUESTIONS.iter().map(|q| q.to_string()).collect();
    questions.push(long_question());
    let r = reference(&x, &y, &questions);
    for (i, q) in questions.iter().enumerate() {
        // Each adapter changes the answer, so matching the right reference means something.
        let [none, with_x, with_y] = [&r.answers[0][i], &r.answers[1][i], &r.answers[2][i]];
        assert!(
            none != with_x && none != with_y && with_x != with_y,
            "{q}: {none:?} / {with_x:?} / {with_y:?}"
        );
    }
    let s = start(
        Arc::new(model),
        ServingConfig {
            kv_bytes: 128 << 20,
            ..Default::default()
        },
        ServerConfig::default(),
    );
    (s, r, questions)
}

fn chat(model: &str, content: &str, extra: Value) -> Value {
    let mut body = json!({
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "temperature": 0,
        "max_tokens": 12,
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

fn text(v: &Value) -> String {
    v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_else(|| panic!("no answer in {v}"))
        .to_string()
}

fn with(adapter: usize) -> String {
    match adapter {
        0 => MODEL.to_string(),
        1 => format!("{MODEL}+x"),
        _ => format!("{MODEL}+y"),
    }
}

#[test]
fn each_adapter_answers_as_if_merged_alone_or_batched_and_caches_stay_apart() {
    let (s, r, questions) = setup();

    // One at a time, through both spellings and both APIs.
    for (a, want) in r.answers.iter().enumerate() {
        let (status, v) = s.post(
            "/v1/chat/completions",
            &chat(&with(a), &questions[0], json!({})),
        );
        assert_eq!(status, 200, "{v}");
        assert_eq!(text(&v), want[0], "adapter {a}");
        assert_eq!(v["model"], with(a).as_str());
    }
    let (_, v) = s.post(
        "/v1/chat/completions",
        &chat(MODEL, &questions[1], json!({"adapter": "y"})),
    );
    assert_eq!(text(&v), r.answers[2][1]);
    let (status, v) = s.post(
        "/api/chat",
        &json!({
            "model": with(1),
            "messages": [{"role": "user", "content": questions[2]}],
            "stream": false,
            "options": {"temperature": 0, "num_predict": 12},
        }),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["message"]["content"], r.answers[1][2].as_str());

    // All three adapters on every short question at once: batched, the same answers.
    let steps_before = s.metric("forja_sched_steps_total");
    let jobs: Vec<(usize, usize)> = (0..3).flat_map(|a| (0..3).map(move |q| (a, q))).collect();
    let got: Vec<String> = s.rt.block_on(async {
        let tasks: Vec<_> = jobs
            .iter()
            .map(|&(a, q)| {
                let client = s.client.clone();
                let url = format!("{}/v1/chat/completions", s.url);
                let body = chat(&with(a), &questions[q], json!({}));
                tokio::spawn(async move {
                    let r = client.post(url).json(&body).send().await.unwrap();
                    assert_eq!(r.status().as_u16(), 200);
                    text(&r.json::<Value>().await.unwrap())
                })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    });
    for (&(a, q), answer) in jobs.iter().zip(&got) {
        assert_eq!(
            *answer, r.answers[a][q],
            "adapter {a}, question {q} in a batch"
        );
    }
    let steps = s.metric("forja_sched_steps_total") - steps_before;
    assert!(
        steps < (jobs.len() * 12 / 2) as f64,
        "{steps} steps for {} requests of 12 tokens: they were not batched",
        jobs.len()
    );

    // A long prompt, first with X, then with Y, then X again, then no adapter. Every adapter
    // has served short questions, so each finds the chat template's first blocks in its own
    // cache; only X's second request finds the long prompt (X's blocks are X's), and every
    // answer is right.
    let long = &questions[3];
    let mut hits = Vec::new();
    for a in [1, 2, 1, 0] {
        let (status, v) = s.post("/v1/chat/completions", &chat(&with(a), long, json!({})));
        assert_eq!(status, 200, "{v}");
        assert_eq!(text(&v), r.answers[a][3], "adapter {a} on the long prompt");
        hits.push((
            v["usage"]["prompt_tokens_details"]["cached_tokens"]
                .as_u64()
                .unwrap_or(0),
            v["usage"]["prompt_tokens"].as_u64().unwrap(),
        ));
    }
    let (template, prompt_len) = hits[0];
    assert!(
        prompt_len >= 64 + template,
        "{hits:?}: the prompt is not long"
    );
    assert_eq!(hits[1].0, template, "Y found X's blocks: {hits:?}");
    assert!(hits[2].0 + 16 >= prompt_len, "X lost its blocks: {hits:?}");
    assert_eq!(hits[3].0, template, "the base found X's blocks: {hits:?}");

    // Requests per adapter.
    let metrics = s.rt.block_on(async {
        s.client
            .get(format!("{}/metrics", s.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    let line = format!("forja_model_requests_total{{model=\"{MODEL}\",adapter=\"x\"}} ");
    let x_count: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix(&line))
        .unwrap_or_else(|| panic!("no {line} in\n{metrics}"))
        .parse()
        .unwrap();
    assert_eq!(x_count, 1 + 1 + 3 + 2);
}

#[test]
fn unknown_adapters_are_404s_and_lists_name_the_adapters() {
    let mut model = load();
    let x = random_adapter(&mut model, 1);
    let y = random_adapter(&mut model, 2);
    model.add_adapter("x", &x).unwrap();
    model.add_adapter("y", &y).unwrap();
    let s = start(
        Arc::new(model),
        ServingConfig::default(),
        ServerConfig::default(),
    );
    for body in [
        chat(&format!("{MODEL}+z"), "hi", json!({})),
        chat(MODEL, "hi", json!({"adapter": "z"})),
    ] {
        let (status, v) = s.post("/v1/chat/completions", &body);
        assert_eq!(status, 404, "{v}");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["code"], "model_not_found");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains(&format!("{MODEL}+z"))
                && msg.contains(&format!("`{MODEL}+x`"))
                && msg.contains(&format!("`{MODEL}+y`")),
            "{msg}"
        );
    }
    let (status, v) = s.post(
        "/api/generate",
        &json!({"model": format!("{MODEL}+z"), "prompt": "hi", "stream": false}),
    );
    assert_eq!(status, 404, "{v}");
    // Both spellings must agree.
    let (status, v) = s.post(
        "/v1/chat/completions",
        &chat(&format!("{MODEL}+x"), "hi", json!({"adapter": "y"})),
    );
    assert_eq!(
        (status, v["error"]["param"].as_str()),
        (400, Some("adapter"))
    );
    // An unknown base stays an unknown model.
    let (status, v) = s.post("/v1/chat/completions", &chat("other+x", "hi", json!({})));
    assert_eq!(status, 404);
    assert!(
        v["error"]["message"].as_str().unwrap().contains("other+x"),
        "{v}"
    );

    let ids: Vec<String> = s.get("/v1/models")["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        ids,
        [
            MODEL.to_string(),
            format!("{MODEL}+x"),
            format!("{MODEL}+y")
        ]
    );
    let tags = s.get("/api/tags");
    let listed: Vec<(String, String)> = tags["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap().to_string(),
                m["details"]["parent_model"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            (MODEL.to_string(), String::new()),
            (format!("{MODEL}+x"), MODEL.to_string()),
            (format!("{MODEL}+y"), MODEL.to_string()),
        ]
    );
    let (status, v) = s.post("/api/show", &json!({"model": format!("{MODEL}+y")}));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["details"]["parent_model"], MODEL);
}

#[test]
fn a_pool_attaches_adapters_at_load_counts_their_bytes_and_refuses_misfits() {
    let path = forja_testkit::testdata_file(MODEL);
    let mut model = load();
    let x = random_adapter(&mut model, 1);
    let config = || forja_server::models::PoolConfig {
        serving: ServingConfig::default(),
        kv_bytes: Some(64 << 20),
        context: None,
        keep_alive: forja_server::models::KeepAlive::Forever,
        memory_budget: 8 << 30,
        available_memory: None,
    };
    let plain =
        forja_server::models::ModelPool::from_paths(std::slice::from_ref(&path), config()).unwrap();
    let pool = forja_server::models::ModelPool::from_paths(std::slice::from_ref(&path), config())
        .unwrap()
        .with_adapters(vec![("x".into(), x.clone())])
        .unwrap();
    let footprint = pool.entries[0].footprint;
    assert_eq!(footprint.adapters, x.bytes());
    assert_eq!(
        footprint.total(),
        plain.entries[0].footprint.total() + x.bytes()
    );
    let s = common::start_pool(pool, ServerConfig::default());
    let (status, v) = s.post(
        "/v1/chat/completions",
        &chat(&format!("{MODEL}+x"), "Name three colors.", json!({})),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(text(&v), reference_answer(&x, "Name three colors."));

    // An adapter of a projection this model does not have: the load fails and says why.
    let mut misfit = x.clone();
    let (a, b) = misfit.modules.values().next().cloned().unwrap();
    misfit
        .modules
        .insert("model.layers.99.self_attn.q_proj".into(), (a, b));
    let pool = forja_server::models::ModelPool::from_paths(&[path], config())
        .unwrap()
        .with_adapters(vec![("bad".into(), misfit)])
        .unwrap();
    let s = common::start_pool(pool, ServerConfig::default());
    let (status, v) = s.post("/v1/chat/completions", &chat(MODEL, "hi", json!({})));
    assert_eq!(status, 500, "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("adapter bad") && msg.contains("model.layers.99.self_attn.q_proj"),
        "{msg}"
    );
    // Names that cannot be spelled in `model` are refused.
    let again = forja_server::models::ModelPool::from_paths(
        &[forja_testkit::testdata_file(MODEL)],
        config(),
    )
    .unwrap()
    .with_adapters(vec![("a+b".into(), x)]);
    assert!(again.is_err());
}

fn reference_answer(adapter: &LoraWeights, question: &str) -> String {
    let mut model = load();
    model
        .decoder
        .attach_lora(adapter, LoraSlot::Single)
        .unwrap();
    answers(&model, &[question.to_string()]).remove(0)
}
