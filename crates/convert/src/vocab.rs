//! `tokenizer.ggml.*` and `tokenizer.chat_template` from an HF folder's `tokenizer.json`,
//! `tokenizer_config.json` (special tokens, BOS/EOS flags, chat template) and `config.json`
//! (fallback special ids), the way llama.cpp's converter writes them for byte-level BPE
//! vocabularies: tokens by id (ids the tokenizer leaves unused up to the model's vocabulary size
//! become `[PAD{id}]`, type unused), token types (special added tokens are control tokens, other
//! added tokens user-defined), merges as `"a b"`, and the pre-tokenizer's llama.cpp name.

use std::path::Path;

use forja_arch::gguf::GgufValue;
use forja_arch::gguf_writer::{i32_array, string_array};
use serde_json::Value;

use crate::error::{ConvertError, Result, input};

const NORMAL: i32 = 1;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const UNUSED: i32 = 5;

/// Llama 3's split pattern (digits in threes).
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's split pattern (digits one at a time).
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|source| ConvertError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| input(path, format!("not valid JSON: {e}")))
}

/// llama.cpp's name for a byte-level BPE pre-tokenizer, from its structure.
fn pre_name(pre: &Value) -> Option<&'static str> {
    let kind = |v: &Value| v.get("type").and_then(Value::as_str).map(str::to_string);
    let byte_level_regex =
        |v: &Value| kind(v).as_deref() == Some("ByteLevel") && v["use_regex"] != Value::Bool(false);
    if byte_level_regex(pre) {
        return Some("gpt-2");
    }
    if kind(pre).as_deref() != Some("Sequence") {
        return None;
    }
    let items = pre.get("pretokenizers")?.as_array()?;
    match &items[..] {
        [split, bl]
            if kind(split).as_deref() == Some("Split")
                && kind(bl).as_deref() == Some("ByteLevel")
                && bl["use_regex"] == Value::Bool(false) =>
        {
            match split["pattern"]["Regex"].as_str()? {
                LLAMA3_SPLIT => Some("llama-bpe"),
                QWEN2_SPLIT => Some("qwen2"),
                _ => None,
            }
        }
        [digits, bl]
            if kind(digits).as_deref() == Some("Digits")
                && digits["individual_digits"] == Value::Bool(true)
                && byte_level_regex(bl) =>
        {
            Some("smollm")
        }
        _ => None,
    }
}

/// A special token named in `tokenizer_config.json`: a string or `{"content": …}`.
fn token_text(v: &Value) -> Option<&str> {
    v.as_str()
        .or_else(|| v.get("content").and_then(Value::as_str))
}

/// The tokenizer metadata for a model of `vocab_size` embedding rows.
pub fn tokenizer_metadata(dir: &Path, vocab_size: u64) -> Result<Vec<(String, GgufValue)>> {
    let tok_path = dir.join("tokenizer.json");
    if !tok_path.is_file() {
        return Err(input(
            dir,
            "no tokenizer.json (the GGUF must carry the tokenizer)",
        ));
    }
    let tok = read_json(&tok_path)?;
    let cfg_path = dir.join("tokenizer_config.json");
    let tcfg = if cfg_path.is_file() {
        read_json(&cfg_path)?
    } else {
        Value::Null
    };
    let model = &tok["model"];
    if model["type"].as_str() != Some("BPE") {
        return Err(ConvertError::Unsupported(format!(
            "{}: tokenizer model {:?} is not supported (byte-level BPE is)",
            tok_path.display(),
            model["type"]
        )));
    }
    let pre = pre_name(&tok["pre_tokenizer"]).ok_or_else(|| {
        ConvertError::Unsupported(format!(
            "{}: the pre-tokenizer {} is not one llama.cpp names (GPT-2, Llama 3, Qwen2 or \
             SmolLM byte-level BPE are)",
            tok_path.display(),
            tok["pre_tokenizer"]
        ))
    })?;
    let vocab = model["vocab"]
        .as_object()
        .ok_or_else(|| input(&tok_path, "model.vocab is not an object"))?;
    let n = usize::try_from(vocab_size).unwrap_or(usize::MAX);
    let mut tokens: Vec<Option<String>> = vec![None; n];
    let mut types = vec![NORMAL; n];
    let mut place = |text: &str, id: &Value, ty: i32| -> Result<()> {
        let id = id
            .as_u64()
            .ok_or_else(|| input(&tok_path, format!("token {text:?} has no integer id")))?;
        let slot = tokens.get_mut(id as usize).ok_or_else(|| {
            input(
                &tok_path,
                format!(
                    "token {text:?} has id {id}, beyond the model's {vocab_size} embedding rows"
                ),
            )
        })?;
        *slot = Some(text.to_string());
        types[id as usize] = ty;
        Ok(())
    };
    for (text, id) in vocab {
        place(text, id, NORMAL)?;
    }
    for a in tok["added_tokens"].as_array().into_iter().flatten() {
        let text = a["content"]
            .as_str()
            .ok_or_else(|| input(&tok_path, "an added token has no content"))?;
        let ty = if a["special"] == Value::Bool(true) {
            CONTROL
        } else {
            USER_DEFINED
        };
        place(text, &a["id"], ty)?;
    }
    let find = |text: &str| -> Option<u32> {
        tokens
            .iter()
            .position(|t| t.as_deref() == Some(text))
            .map(|i| i as u32)
    };
    let mut special: Vec<(String, GgufValue)> = Vec::new();
    let model_cfg = read_json(&dir.join("config.json")).unwrap_or(Value::Null);
    for (key, cfg_key, id_key) in [
        ("bos", "bos_token", "bos_token_id"),
        ("eos", "eos_token", "eos_token_id"),
        ("unknown", "unk_token", ""),
        ("padding", "pad_token", "pad_token_id"),
    ] {
        let id = token_text(&tcfg[cfg_key])
            .and_then(find)
            .or_else(|| model_cfg[id_key].as_u64().map(|v| v as u32));
        if let Some(id) = id.filter(|&i| (i as usize) < n) {
            special.push((format!("tokenizer.ggml.{key}_token_id"), GgufValue::U32(id)));
        }
    }
    for flag in ["add_bos_token", "add_eos_token"] {
        if let Some(b) = tcfg[flag].as_bool() {
            special.push((format!("tokenizer.ggml.{flag}"), GgufValue::Bool(b)));
        }
    }
    let merges: Vec<String> = model["merges"]
        .as_array()
        .ok_or_else(|| input(&tok_path, "model.merges is not an array"))?
        .iter()
        .map(|m| match m {
            Value::String(s) => Ok(s.clone()),
            Value::Array(pair) => match &pair[..] {
                [Value::String(a), Value::String(b)] => Ok(format!("{a} {b}")),
                _ => Err(input(&tok_path, format!("malformed merge {m}"))),
            },
            _ => Err(input(&tok_path, format!("malformed merge {m}"))),
        })
        .collect::<Result<_>>()?;
    let tokens: Vec<String> = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            t.unwrap_or_else(|| {
                types[i] = UNUSED;
                format!("[PAD{i}]")
            })
        })
        .collect();
    let mut out = vec![
        (
            "tokenizer.ggml.model".to_string(),
            GgufValue::String("gpt2".into()),
        ),
        (
            "tokenizer.ggml.pre".to_string(),
            GgufValue::String(pre.into()),
        ),
        ("tokenizer.ggml.tokens".to_string(), string_array(tokens)),
        ("tokenizer.ggml.token_type".to_string(), i32_array(types)),
        ("tokenizer.ggml.merges".to_string(), string_array(merges)),
    ];
    out.extend(special);
    if let Some(t) = chat_template(dir, &tcfg)? {
        out.push(("tokenizer.chat_template".into(), GgufValue::String(t)));
    }
    Ok(out)
}

/// The chat template: `tokenizer_config.json`'s `chat_template` (a string, or named templates
/// of which `default` is taken), else `chat_template.jinja` or `chat_template.json` beside it.
fn chat_template(dir: &Path, tcfg: &Value) -> Result<Option<String>> {
    match &tcfg["chat_template"] {
        Value::String(s) => return Ok(Some(s.clone())),
        Value::Array(named) => {
            let default = named
                .iter()
                .find(|t| t["name"] == "default")
                .and_then(|t| t["template"].as_str());
            if let Some(t) = default {
                return Ok(Some(t.to_string()));
            }
        }
        _ => {}
    }
    let jinja = dir.join("chat_template.jinja");
    if jinja.is_file() {
        return std::fs::read_to_string(&jinja)
            .map(Some)
            .map_err(|source| ConvertError::Read {
                path: jinja,
                source,
            });
    }
    let json = dir.join("chat_template.json");
    if json.is_file() {
        return Ok(read_json(&json)?["chat_template"]
            .as_str()
            .map(str::to_string));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pre_tokenizers_get_llama_cpp_names() {
        let bl = |r: bool| json!({"type": "ByteLevel", "use_regex": r});
        let split = |p: &str| json!({"type": "Split", "pattern": {"Regex": p}});
        let seq = |a: Value, b: Value| json!({"type": "Sequence", "pretokenizers": [a, b]});
        assert_eq!(pre_name(&bl(true)), Some("gpt-2"));
        assert_eq!(
            pre_name(&seq(split(LLAMA3_SPLIT), bl(false))),
            Some("llama-bpe")
        );
        assert_eq!(pre_name(&seq(split(QWEN2_SPLIT), bl(false))), Some("qwen2"));
        let digits = json!({"type": "Digits", "individual_digits": true});
        assert_eq!(pre_name(&seq(digits, bl(true))), Some("smollm"));
        assert_eq!(pre_name(&seq(split("\\s+"), bl(false))), None);
        assert_eq!(pre_name(&json!({"type": "Metaspace"})), None);
    }
}
