//! Structured output on the real models: every token's bytes are what the tokenizer decodes, so
//! the grammar sees the same text the user gets; masked greedy decoding yields JSON that follows
//! the schema, for byte-level BPE (SmolLM2, Qwen) and SentencePiece (Gemma) vocabularies.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

use candle_core::Device;
use forja_engine::constrain::OutputFormat;
use forja_engine::{LoadedModel, Message, Sampler, SamplingParams};
use forja_models::SeqStep;
use serde_json::{Value, json};

fn load(name: &str) -> LoadedModel {
    LoadedModel::load(&forja_testkit::testdata_file(name), &Device::Cpu).unwrap()
}

#[test]
fn token_bytes_spell_the_encoded_text() {
    let text = "Hola, ¿qué tal? 東京 {\"a\": [1, 2.5e-3]}\n\ttabs and  spaces — ok 🙂";
    for name in forja_testkit::REAL_GGUFS {
        let m = load(name);
        let ids = m.tokenizer.encode_plain(text).unwrap();
        let bytes: Vec<u8> = ids
            .iter()
            .flat_map(|&id| m.tokenizer.token_bytes(id).unwrap())
            .collect();
        let decoded = m.tokenizer.decode(&ids, false).unwrap();
        assert_eq!(String::from_utf8(bytes).unwrap(), decoded, "{name}");
        assert!(
            decoded.contains("東京 {\"a\": [1, 2.5e-3]}"),
            "{name}: {decoded}"
        );
    }
}

/// Greedy decoding under `format`; returns the text.
fn constrained(m: &LoadedModel, question: &str, format: &OutputFormat, max: usize) -> String {
    let prompt = m
        .chat_prompt(&[Message::new("user", question)], None)
        .unwrap();
    let mut c = m.constraint(format).unwrap();
    let mut sampler = Sampler::new(SamplingParams::greedy()).unwrap();
    let mut cache = m.new_cache();
    let mut feed = prompt.clone();
    let mut out = Vec::new();
    for _ in 0..max {
        let mut step = [SeqStep {
            tokens: &feed,
            cache: &mut cache,
            all_logits: false,
            adapter: None,
        }];
        let logits = m.decoder.forward(&mut step).unwrap().remove(0);
        let mut row: Vec<f32> = logits.flatten_all().unwrap().to_vec1().unwrap();
        c.mask(&mut row).unwrap();
        let t = sampler.sample(&row, &prompt, 0).unwrap().token;
        if m.tokenizer.special.stop.contains(&t) {
            break;
        }
        c.consume(t).unwrap();
        out.push(t);
        if c.is_done() {
            break;
        }
        feed = vec![t];
    }
    m.tokenizer.decode(&out, true).unwrap()
}

#[test]
fn masked_decoding_follows_the_schema() {
    let schema = json!({
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 20},
            "population": {"type": "integer", "minimum": 0, "maximum": 99999999},
            "capital": {"type": "boolean"}
        },
        "required": ["city", "population", "capital"],
        "additionalProperties": false
    });
    for name in forja_testkit::REAL_GGUFS {
        let m = load(name);
        let text = constrained(
            &m,
            "Describe Paris as JSON with city, population and capital.",
            &OutputFormat::JsonSchema(schema.clone()),
            80,
        );
        let v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{name}: not JSON ({e}): {text}"));
        let obj = v.as_object().unwrap();
        assert_eq!(obj.len(), 3, "{name}: {text}");
        assert!(
            obj["city"].as_str().unwrap().chars().count() <= 20,
            "{name}: {text}"
        );
        let p = obj["population"].as_u64().unwrap();
        assert!(p <= 99_999_999, "{name}: {text}");
        assert!(obj["capital"].is_boolean(), "{name}: {text}");

        let text = constrained(&m, "Give me a JSON object.", &OutputFormat::JsonObject, 60);
        // A model may run out of budget inside the object; what it wrote is a valid prefix.
        assert!(text.starts_with('{'), "{name}: {text}");
    }
}

#[test]
fn invalid_schemas_are_errors() {
    let m = load(forja_testkit::REAL_GGUFS[0]);
    let e = m
        .constraint(&OutputFormat::JsonSchema(json!({"type": "nonsense"})))
        .unwrap_err()
        .to_string();
    assert!(e.contains("invalid JSON schema"), "{e}");
    assert!(
        m.constraint(&OutputFormat::JsonSchema(json!([1, 2])))
            .is_err()
    );
}
