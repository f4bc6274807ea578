//! What the engine's tests share: the conversations the parity tests render (the same as
//! scripts/goldens/chat_templates.py) and golden-file helpers.

#![allow(dead_code, reason = "each test crate uses part of these")]

use forja_engine::Message;
use serde_json::{Value, json};

/// `(name, messages, tools)`: system + user, multi-turn, a tool call and its result.
pub fn conversations() -> Vec<(&'static str, Vec<Message>, Option<Value>)> {
    let tool = json!([{"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name"}}, "required": ["city"]}}}]);
    let mut call = Message::new("assistant", "");
    call.tool_calls = Some(
        json!([{"type": "function", "id": "call_1", "function": {"name": "get_weather", "arguments": {"city": "Madrid"}}}]),
    );
    let mut result = Message::new("tool", "{\"temp_c\": 21}");
    result.name = Some("get_weather".into());
    result.tool_call_id = Some("call_1".into());
    vec![
        (
            "system_user",
            vec![
                Message::new("system", "You are a careful legal assistant."),
                Message::new("user", "¿Qué cláusulas de rescisión hay?"),
            ],
            None,
        ),
        (
            "multi_turn",
            vec![
                Message::new("user", "Hi!"),
                Message::new("assistant", "Hello, how can I help?"),
                Message::new("user", "Summarize clause 4."),
            ],
            None,
        ),
        (
            "tools",
            vec![
                Message::new("user", "What is the weather in Madrid?"),
                call,
                result,
            ],
            Some(tool),
        ),
    ]
}

/// A committed golden file of fixtures/goldens/.
pub fn golden(name: &str) -> Value {
    let path = forja_testkit::fixtures_dir().join("goldens").join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Token ids of a JSON array.
pub fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// The best token (the lowest id among equals).
pub fn argmax(logits: &[f32]) -> usize {
    (0..logits.len())
        .max_by(|&a, &b| logits[a].total_cmp(&logits[b]).then(b.cmp(&a)))
        .unwrap()
}

/// The tiny random model of `fixtures/tiny/FAMILY` with a word-level tokenizer of its 256 ids
/// (`w0` … `w255`), copied into `dir`: a model the engine loads without any download.
pub fn tiny_model(dir: &std::path::Path, family: &str) -> forja_engine::LoadedModel {
    let tiny = forja_testkit::fixtures_dir().join("tiny").join(family);
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(tiny.join(f), dir.join(f)).unwrap();
    }
    let vocab: serde_json::Map<String, Value> =
        (0..256).map(|i| (format!("w{i}"), i.into())).collect();
    let tokenizer = json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null,
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "w0"},
    });
    std::fs::write(dir.join("tokenizer.json"), tokenizer.to_string()).unwrap();
    forja_engine::LoadedModel::load_cpu(dir, None).unwrap()
}

/// Greedy tokens (at most `max_tokens`) for `prompt` from an empty single-sequence cache.
pub fn greedy_alone(
    model: &forja_engine::LoadedModel,
    prompt: &[u32],
    max_tokens: usize,
) -> Vec<u32> {
    let params = forja_engine::GenerateParams {
        sampling: forja_engine::SamplingParams::greedy(),
        max_tokens,
        ..Default::default()
    };
    let mut cache = model.new_cache();
    let mut cached = Vec::new();
    let g = forja_engine::generate(model, prompt, &mut cache, &mut cached, &params, &mut |_| {
        true
    })
    .unwrap();
    g.tokens.iter().map(|t| t.token).collect()
}

/// Submits every prompt to `engine` at once with `params`; each one's sampled tokens, in order.
pub fn serve_all(
    engine: &forja_engine::serving::Engine,
    prompts: &[Vec<u32>],
    params: &forja_engine::GenerateParams,
) -> Vec<Vec<forja_engine::Sampled>> {
    use forja_engine::serving::{ChannelSink, Event, Job};
    let receivers: Vec<_> = prompts
        .iter()
        .map(|p| {
            let (tx, rx) = std::sync::mpsc::channel();
            let job = Job {
                prompt: p.clone(),
                params: params.clone(),
                priority: 0,
                constraint: None,
                adapter: None,
                sink: Box::new(ChannelSink(tx)),
            };
            engine.submit(job).unwrap();
            rx
        })
        .collect();
    receivers
        .into_iter()
        .map(|rx| {
            let mut out = Vec::new();
            for e in rx {
                match e {
                    Event::Token { sampled, .. } => out.push(sampled),
                    Event::Done { .. } => break,
                    Event::Error(msg) => panic!("{}: {msg}", engine.device()),
                }
            }
            out
        })
        .collect()
}
