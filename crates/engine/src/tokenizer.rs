//! One tokenizer interface over HF `tokenizer.json` files and the vocabularies embedded in GGUF
//! files (`tokenizer.ggml.*`). A GGUF byte-level BPE vocabulary is turned into the equivalent
//! `tokenizers` pipeline (split regex of its pre-tokenizer type, byte-level mapping, merges).

use std::collections::HashSet;
use std::path::Path;

use candle_core::quantized::gguf_file;
use serde_json::{Value, json};

use crate::error::{EngineError, Result};
use crate::spm::SpmVocab;

/// The tokenizer implementation behind the interface.
#[derive(Debug)]
enum Backend {
    /// `tokenizers` pipelines: HF files and GGUF byte-level BPE vocabularies, with a copy of the
    /// pipeline's added tokens that leaves special-token text as plain text (the model, the
    /// largest part, is shared).
    Hf(Box<tokenizers::Tokenizer>, Box<tokenizers::AddedVocabulary>),
    /// GGUF SentencePiece-style vocabularies.
    Spm(Box<SpmVocab>),
}

/// Special-token facts a generator needs.
#[derive(Debug, Clone, Default)]
pub struct SpecialTokens {
    pub bos: Option<u32>,
    /// Tokens that end a turn (EOS, end-of-turn).
    pub stop: Vec<u32>,
    /// Prepend BOS when encoding a prompt.
    pub add_bos: bool,
    pub bos_text: String,
    pub eos_text: String,
}

#[derive(Debug)]
pub struct Tokenizer {
    inner: Backend,
    pub special: SpecialTokens,
    /// Ids of control tokens (skipped when decoding for display).
    control: HashSet<u32>,
    /// The model's chat template, when it ships one.
    pub chat_template: Option<String>,
    origin: String,
    /// Tokens are GPT-2 byte-level strings (one character per byte).
    byte_level: bool,
}

/// The byte a GPT-2 byte-level character stands for: printable bytes are themselves, the rest
/// were moved to U+0100 onwards in byte order.
fn byte_level_byte(c: char) -> Option<u8> {
    let printable = |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || b >= 174;
    let code = c as u32;
    if code < 256 && printable(code) {
        return Some(code as u8);
    }
    let n = code.checked_sub(256)?;
    (0u32..256)
        .filter(|&b| !printable(b))
        .nth(n as usize)
        .map(|b| b as u8)
}

/// End-of-turn markers of chat models: generation stops at them even when a file names another
/// EOS.
const END_OF_TURN: [&str; 5] = [
    "<|im_end|>",
    "<|eot_id|>",
    "<end_of_turn>",
    "<|end|>",
    "<|endoftext|>",
];

/// Llama 3's split pattern.
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's split pattern (digits one at a time).
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

fn split(pattern: &str) -> Value {
    json!({"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": false})
}

fn byte_level(use_regex: bool) -> Value {
    json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex})
}

/// The pre-tokenizer for llama.cpp's `tokenizer.ggml.pre` names.
fn pre_tokenizer(pre: &str) -> Option<Value> {
    let seq = |items: Vec<Value>| json!({"type": "Sequence", "pretokenizers": items});
    Some(match pre {
        "default" | "gpt-2" | "gpt2" => byte_level(true),
        "smollm" => seq(vec![
            json!({"type": "Digits", "individual_digits": true}),
            byte_level(true),
        ]),
        "llama3" | "llama-bpe" | "llama-v3" | "falcon3" | "pixtral" | "tekken" => {
            seq(vec![split(LLAMA3_SPLIT), byte_level(false)])
        }
        "qwen2" | "deepseek-r1-qwen" | "qwen35" => seq(vec![split(QWEN2_SPLIT), byte_level(false)]),
        "starcoder" | "refact" => seq(vec![
            json!({"type": "Digits", "individual_digits": true}),
            byte_level(true),
        ]),
        _ => return None,
    })
}

fn meta<'a>(c: &'a gguf_file::Content, key: &str) -> Option<&'a gguf_file::Value> {
    c.metadata.get(key)
}

fn meta_u32(c: &gguf_file::Content, key: &str) -> Option<u32> {
    meta(c, key).and_then(|v| {
        v.to_u32()
            .ok()
            .or_else(|| v.to_u64().ok().map(|x| x as u32))
    })
}

fn meta_strings(c: &gguf_file::Content, key: &str) -> Option<Vec<String>> {
    let arr = meta(c, key)?.to_vec().ok()?;
    arr.iter().map(|v| v.to_string().ok().cloned()).collect()
}

/// Whether an HF pipeline decodes with GPT-2's byte-level mapping.
fn is_byte_level(b: &Backend) -> bool {
    match b {
        Backend::Hf(t, _) => {
            serde_json::to_string(&t.get_decoder()).is_ok_and(|d| d.contains("\"ByteLevel\""))
        }
        Backend::Spm(_) => false,
    }
}

fn hf_backend(parse: tokenizers::Tokenizer) -> Backend {
    let mut plain = parse.get_added_vocabulary().clone();
    plain.set_encode_special_tokens(true);
    Backend::Hf(Box::new(parse), Box::new(plain))
}

/// The `tokenizers` pipeline of a GGUF byte-level BPE vocabulary: `tokens` by id, `types` their
/// GGUF token types (3 control, 4 user-defined: added tokens, matched before the model), merges
/// as "left right" by rank, and the pre-tokenizer's JSON. Built in place rather than through a
/// `tokenizer.json` text, which would hold the vocabulary several times over while loading.
fn byte_level_bpe(
    tokens: &[String],
    types: &[i32],
    merges: Vec<String>,
    pre: Value,
    ignore_merges: bool,
) -> std::result::Result<tokenizers::Tokenizer, String> {
    let merges = merges
        .into_iter()
        .enumerate()
        .map(|(rank, m)| {
            let mut parts = m.split(' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(left), Some(right), None) => Ok((left.to_string(), right.to_string())),
                _ => Err(format!(
                    "tokenizer.ggml.merges[{rank}] ({m:?}) is not two tokens separated by a space"
                )),
            }
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let vocab: tokenizers::models::bpe::Vocab = tokens
        .iter()
        .enumerate()
        .map(|(id, t)| (t.clone(), id as u32))
        .collect();
    let bpe = tokenizers::models::bpe::BPE::builder()
        .vocab_and_merges(vocab, merges)
        .ignore_merges(ignore_merges)
        .build()
        .map_err(|e| e.to_string())?;
    let pre: tokenizers::PreTokenizerWrapper =
        serde_json::from_value(pre).map_err(|e| e.to_string())?;
    let decoder: tokenizers::DecoderWrapper =
        serde_json::from_value(byte_level(true)).map_err(|e| e.to_string())?;
    let mut t = tokenizers::Tokenizer::new(bpe);
    t.with_pre_tokenizer(Some(pre)).with_decoder(Some(decoder));
    let added = tokens
        .iter()
        .zip(types)
        .filter(|(_, ty)| matches!(**ty, 3 | 4))
        .map(|(t, ty)| {
            tokenizers::AddedToken::from(t.as_str(), *ty == 3)
                .single_word(false)
                .lstrip(false)
                .rstrip(false)
                .normalized(false)
        });
    t.add_tokens(added).map_err(|e| e.to_string())?;
    Ok(t)
}

/// Token ids of `text` through `t`'s pipeline with `added` in place of its own added tokens:
/// what `t.encode(text, false)` gives (no post-processor, padding or truncation) when `t` is set
/// to encode special tokens as text.
fn encode_with(
    t: &tokenizers::Tokenizer,
    added: &tokenizers::AddedVocabulary,
    text: &str,
) -> tokenizers::Result<Vec<u32>> {
    use tokenizers::{Model, OffsetType, PreTokenizer};
    let mut pieces = added.extract_and_normalize(t.get_normalizer(), text);
    if let Some(pre) = t.get_pre_tokenizer() {
        pre.pre_tokenize(&mut pieces)?;
    }
    let model = t.get_model();
    pieces.tokenize(|piece| model.tokenize(piece.get()))?;
    Ok(pieces
        .into_encoding(None, 0, OffsetType::None)?
        .get_ids()
        .to_vec())
}

/// A piece of text to encode, and whether special-token text in it becomes special tokens.
#[derive(Debug, Clone, Copy)]
pub struct Part<'a> {
    pub text: &'a str,
    pub parse_special: bool,
}

impl Tokenizer {
    /// Builds the tokenizer embedded in a GGUF file.
    pub fn from_gguf(c: &gguf_file::Content, origin: &str) -> Result<Self> {
        let err = |what: String| EngineError::Tokenizer {
            origin: origin.to_string(),
            what,
        };
        let model = meta(c, "tokenizer.ggml.model")
            .and_then(|v| v.to_string().ok().cloned())
            .ok_or_else(
                || err("the GGUF has no tokenizer (tokenizer.ggml.model missing)".into()),
            )?;
        let tokens = meta_strings(c, "tokenizer.ggml.tokens")
            .ok_or_else(|| err("tokenizer.ggml.tokens missing".into()))?;
        let types: Vec<i32> = meta(c, "tokenizer.ggml.token_type")
            .and_then(|v| v.to_vec().ok())
            .map(|a| a.iter().map(|x| x.to_i32().unwrap_or(1)).collect())
            .unwrap_or_else(|| vec![1; tokens.len()]);
        // llama.cpp's default for adding BOS when the file does not say: SentencePiece and
        // Llama 3 style byte-level vocabularies add it.
        let mut default_bos = model == "llama";
        let inner = match model.as_str() {
            "gpt2" => {
                let pre_name = meta(c, "tokenizer.ggml.pre")
                    .and_then(|v| v.to_string().ok().cloned())
                    .unwrap_or_else(|| "default".into());
                let pre = pre_tokenizer(&pre_name).ok_or_else(|| {
                    err(format!(
                        "unsupported pre-tokenizer {pre_name:?} of a byte-level BPE vocabulary"
                    ))
                })?;
                // Llama 3 style vocabularies emit a whole pre-token when the vocabulary has it,
                // before any merge (as its tokenizer.json and llama.cpp do).
                let ignore_merges = matches!(
                    pre_name.as_str(),
                    "llama3" | "llama-bpe" | "llama-v3" | "falcon3" | "pixtral" | "tekken"
                );
                default_bos = ignore_merges;
                let merges = meta_strings(c, "tokenizer.ggml.merges")
                    .ok_or_else(|| err("tokenizer.ggml.merges missing".into()))?;
                hf_backend(
                    byte_level_bpe(&tokens, &types, merges, pre, ignore_merges).map_err(err)?,
                )
            }
            "llama" => {
                let scores: Vec<f32> = meta(c, "tokenizer.ggml.scores")
                    .and_then(|v| v.to_vec().ok())
                    .map(|a| a.iter().map(|x| x.to_f32().unwrap_or(0.0)).collect())
                    .unwrap_or_else(|| vec![0.0; tokens.len()]);
                let add_space_prefix = meta(c, "tokenizer.ggml.add_space_prefix")
                    .and_then(|v| v.to_bool().ok())
                    .unwrap_or(true);
                let unk = meta_u32(c, "tokenizer.ggml.unknown_token_id");
                Backend::Spm(Box::new(
                    SpmVocab::new(tokens.clone(), scores, types.clone(), unk, add_space_prefix)
                        .map_err(err)?,
                ))
            }
            other => {
                return Err(err(format!(
                    "the {other:?} vocabulary type of GGUF files is not supported yet (\"gpt2\" byte-level BPE and \"llama\" SentencePiece are)"
                )));
            }
        };
        let control = types
            .iter()
            .enumerate()
            .filter(|(_, t)| **t == 3)
            .map(|(i, _)| i as u32)
            .collect();
        let text = |id: Option<u32>| {
            id.and_then(|i| tokens.get(i as usize).cloned())
                .unwrap_or_default()
        };
        let bos = meta_u32(c, "tokenizer.ggml.bos_token_id");
        let eos = meta_u32(c, "tokenizer.ggml.eos_token_id");
        let mut stop: Vec<u32> = [
            eos,
            meta_u32(c, "tokenizer.ggml.eot_token_id"),
            meta_u32(c, "tokenizer.ggml.eom_token_id"),
        ]
        .into_iter()
        .flatten()
        .collect();
        stop.extend(
            END_OF_TURN
                .iter()
                .filter_map(|m| tokens.iter().position(|t| t == m))
                .map(|i| i as u32),
        );
        stop.sort_unstable();
        stop.dedup();
        let special = SpecialTokens {
            bos,
            stop,
            add_bos: meta(c, "tokenizer.ggml.add_bos_token")
                .and_then(|v| v.to_bool().ok())
                .unwrap_or(default_bos),
            bos_text: text(bos),
            eos_text: text(eos),
        };
        let chat_template =
            meta(c, "tokenizer.chat_template").and_then(|v| v.to_string().ok().cloned());
        Ok(Tokenizer {
            byte_level: is_byte_level(&inner),
            inner,
            special,
            control,
            chat_template,
            origin: origin.to_string(),
        })
    }

    /// Reads the tokenizer embedded in the GGUF file at `path`.
    pub fn from_gguf_path(path: &Path) -> Result<Self> {
        let origin = path.display().to_string();
        let content = std::fs::File::open(path)
            .map_err(|e| e.to_string())
            .and_then(|mut f| gguf_file::Content::read(&mut f).map_err(|e| e.to_string()))
            .map_err(|what| EngineError::Tokenizer {
                origin: origin.clone(),
                what,
            })?;
        Self::from_gguf(&content, &origin)
    }

    /// Loads `tokenizer.json` (+ `tokenizer_config.json` for the chat template and special
    /// tokens) from an HF model folder.
    pub fn from_hf_dir(dir: &Path) -> Result<Self> {
        let origin = dir.display().to_string();
        let err = |what: String| EngineError::Tokenizer {
            origin: origin.clone(),
            what,
        };
        let path = dir.join("tokenizer.json");
        if !path.is_file() {
            return Err(err("tokenizer.json is missing from the model folder".into()));
        }
        let mut hf = tokenizers::Tokenizer::from_file(&path).map_err(|e| err(e.to_string()))?;
        // Files may carry the padding and truncation of their training runs; a prompt is never
        // padded, and its length is checked against the context instead of being cut.
        hf.with_padding(None);
        hf.with_truncation(None).map_err(|e| err(e.to_string()))?;
        let config: Value = match std::fs::read_to_string(dir.join("tokenizer_config.json")) {
            Ok(t) => {
                serde_json::from_str(&t).map_err(|e| err(format!("tokenizer_config.json: {e}")))?
            }
            Err(_) => Value::Null,
        };
        let token_text = |key: &str| -> Option<String> {
            match &config[key] {
                Value::String(s) => Some(s.clone()),
                Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
                _ => None,
            }
        };
        let id_of = |t: &Option<String>| t.as_deref().and_then(|t| hf.token_to_id(t));
        let bos_text = token_text("bos_token");
        let eos_text = token_text("eos_token");
        let mut stop: Vec<u32> = id_of(&eos_text).into_iter().collect();
        if let Ok(text) = std::fs::read_to_string(dir.join("generation_config.json")) {
            let g: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            match &g["eos_token_id"] {
                Value::Number(n) => stop.extend(n.as_u64().map(|x| x as u32)),
                Value::Array(a) => {
                    stop.extend(a.iter().filter_map(Value::as_u64).map(|x| x as u32))
                }
                _ => {}
            }
        }
        stop.extend(END_OF_TURN.iter().filter_map(|m| hf.token_to_id(m)));
        stop.sort_unstable();
        stop.dedup();
        let control = hf
            .get_added_tokens_decoder()
            .iter()
            .filter(|(_, t)| t.special)
            .map(|(id, _)| *id)
            .collect();
        let chat_template = match &config["chat_template"] {
            Value::String(s) => Some(s.clone()),
            Value::Array(list) => list
                .iter()
                .find(|t| t["name"] == "default")
                .and_then(|t| t["template"].as_str())
                .map(str::to_string),
            _ => std::fs::read_to_string(dir.join("chat_template.jinja")).ok(),
        };
        let special = SpecialTokens {
            bos: id_of(&bos_text),
            stop,
            // tokenizer_config.json says, or else the tokenizer.json post-processor does.
            add_bos: match config["add_bos_token"].as_bool() {
                Some(b) => b,
                None => {
                    let bos = id_of(&bos_text);
                    let with = hf.encode("a", true).map_err(|e| err(e.to_string()))?;
                    bos.is_some() && with.get_ids().first().copied() == bos
                }
            },
            bos_text: bos_text.unwrap_or_default(),
            eos_text: eos_text.unwrap_or_default(),
        };
        let inner = hf_backend(hf);
        Ok(Tokenizer {
            byte_level: is_byte_level(&inner),
            inner,
            special,
            control,
            chat_template,
            origin,
        })
    }

    /// Token ids of `text`. Special-token text in `text` (e.g. `<|im_start|>`) becomes the special
    /// token; BOS is prepended when the model asks for it and `add_bos` is set.
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>> {
        self.encode_parts(
            &[Part {
                text,
                parse_special: true,
            }],
            add_bos,
        )
    }

    /// Token ids of `text` as plain text: special-token look-alikes stay text, no BOS.
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>> {
        self.encode_parts(
            &[Part {
                text,
                parse_special: false,
            }],
            false,
        )
    }

    /// Token ids of the concatenation of `parts`; special-token text becomes a special token only
    /// in parts that allow it (a chat template's own markup, not what a user typed).
    pub fn encode_parts(&self, parts: &[Part<'_>], add_bos: bool) -> Result<Vec<u32>> {
        let mut body: Vec<u32> = Vec::new();
        let mut prev_special = true;
        for part in parts.iter().filter(|p| !p.text.is_empty()) {
            match &self.inner {
                Backend::Hf(t, plain) => {
                    let ids = if part.parse_special {
                        t.encode(part.text, false).map(|e| e.get_ids().to_vec())
                    } else {
                        encode_with(t, plain, part.text)
                    }
                    .map_err(|e| EngineError::Tokenizer {
                        origin: self.origin.clone(),
                        what: e.to_string(),
                    })?;
                    body.extend_from_slice(&ids);
                }
                Backend::Spm(v) => {
                    v.encode_into(part.text, part.parse_special, &mut prev_special, &mut body)
                }
            }
        }
        let mut ids = Vec::with_capacity(body.len() + 1);
        let bos = self.special.bos.filter(|_| add_bos && self.special.add_bos);
        ids.extend(bos);
        ids.extend_from_slice(&body);
        Ok(ids)
    }

    /// Texts of the control tokens (what a template writes to mark turns).
    pub fn control_texts(&self) -> Vec<String> {
        let mut ids: Vec<u32> = self.control.iter().copied().collect();
        ids.sort_unstable();
        ids.into_iter()
            .filter_map(|id| match &self.inner {
                Backend::Hf(t, _) => t.id_to_token(id),
                Backend::Spm(v) => v.token_text(id).map(str::to_string),
            })
            .filter(|t| !t.is_empty())
            .collect()
    }

    /// Text of `ids`; control tokens are dropped when `skip_special`.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        match &self.inner {
            Backend::Spm(v) => Ok(v.decode(ids, skip_special)),
            Backend::Hf(t, _) => {
                let kept: Vec<u32> = if skip_special {
                    ids.iter()
                        .copied()
                        .filter(|i| !self.control.contains(i))
                        .collect()
                } else {
                    ids.to_vec()
                };
                t.decode(&kept, false).map_err(|e| EngineError::Tokenizer {
                    origin: self.origin.clone(),
                    what: e.to_string(),
                })
            }
        }
    }

    /// Text `id` adds after `context` (its leading space kept where a tokenizer strips it from
    /// the start of a text).
    pub fn piece(&self, context: &[u32], id: u32) -> Result<String> {
        let mut ids = context.to_vec();
        let before = self.decode(&ids, false)?;
        ids.push(id);
        let after = self.decode(&ids, false)?;
        Ok(after.get(before.len()..).unwrap_or_default().to_string())
    }

    /// Whether `id` is a control token (turn markers, BOS/EOS), not text.
    pub fn is_control(&self, id: u32) -> bool {
        self.control.contains(&id)
    }

    /// The bytes token `id` stands for in generated text (byte-level tokens mapped back to bytes,
    /// SentencePiece's `▁` to a space, `<0x41>` byte tokens to their byte); `None` for an id
    /// outside the vocabulary.
    pub fn token_bytes(&self, id: u32) -> Option<Vec<u8>> {
        match &self.inner {
            Backend::Spm(v) => v.token_bytes(id),
            Backend::Hf(t, _) => {
                let text = t.id_to_token(id)?;
                if self.byte_level {
                    let bytes: Option<Vec<u8>> = text.chars().map(byte_level_byte).collect();
                    // Added tokens are stored as plain text.
                    Some(bytes.unwrap_or_else(|| text.clone().into_bytes()))
                } else if let Some(b) = crate::spm::byte_of(&text) {
                    Some(vec![b])
                } else {
                    Some(text.replace('\u{2581}', " ").into_bytes())
                }
            }
        }
    }

    pub fn vocab_size(&self) -> usize {
        match &self.inner {
            Backend::Hf(t, _) => t.get_vocab_size(true),
            Backend::Spm(v) => v.len(),
        }
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        match &self.inner {
            Backend::Hf(t, _) => t.token_to_id(token),
            Backend::Spm(v) => v.token_to_id(token),
        }
    }
}

/// Turns a growing list of token ids into text pieces that never split a UTF-8 character: a
/// piece is released only once it decodes without a replacement character at its end.
#[derive(Debug, Default)]
pub struct IncrementalDecoder {
    ids: Vec<u32>,
    /// Start of the window decoded for context.
    prefix_offset: usize,
    /// Ids up to here have been emitted as text.
    read_offset: usize,
}

impl IncrementalDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// A decoder for tokens that continue `context` (the prompt): its last tokens are decoded
    /// with the new ones, so a tokenizer that strips the leading space of a text (SentencePiece
    /// style) keeps the space that separates the continuation from the prompt.
    pub fn with_context(context: &[u32]) -> Self {
        let tail = &context[context.len().saturating_sub(CONTEXT_TOKENS)..];
        IncrementalDecoder {
            ids: tail.to_vec(),
            prefix_offset: 0,
            read_offset: tail.len(),
        }
    }

    /// Adds `id` and returns newly complete text (possibly empty). Control tokens add no text.
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> Result<String> {
        if tok.is_control(id) {
            return Ok(String::new());
        }
        self.ids.push(id);
        let prefix = tok.decode(&self.ids[self.prefix_offset..self.read_offset], false)?;
        let full = tok.decode(&self.ids[self.prefix_offset..], false)?;
        if full.len() > prefix.len() && !full.ends_with('\u{FFFD}') {
            // Normally `full` extends `prefix`; if a tokenizer rewrote the context, emit from the
            // same byte offset (on a character boundary) rather than stall.
            let text = full.get(prefix.len()..).unwrap_or_default().to_string();
            self.prefix_offset = self.read_offset;
            self.read_offset = self.ids.len();
            Ok(text)
        } else {
            Ok(String::new())
        }
    }

    /// Whatever is left (a dangling partial character decodes as U+FFFD).
    pub fn finish(&mut self, tok: &Tokenizer) -> Result<String> {
        let prefix = tok.decode(&self.ids[self.prefix_offset..self.read_offset], false)?;
        let full = tok.decode(&self.ids[self.prefix_offset..], false)?;
        self.prefix_offset = self.ids.len();
        self.read_offset = self.ids.len();
        Ok(full.get(prefix.len()..).unwrap_or_default().to_string())
    }
}

/// Prompt tokens decoded before the first new one.
const CONTEXT_TOKENS: usize = 4;

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        reason = "test code fails loudly"
    )]

    use super::*;

    /// Plain-text encoding runs the pipeline with a copy of the added tokens only; it must give
    /// what the whole tokenizer gives when set to encode special tokens as text.
    #[test]
    fn plain_encoding_equals_the_library_flag_on_real_tokenizers() {
        let data = forja_testkit::testdata_dir();
        let mut tokenizers = vec![
            Tokenizer::from_gguf_path(&data.join("SmolLM2-135M-Instruct.Q4_1.gguf")).unwrap(),
            Tokenizer::from_gguf_path(&data.join("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"))
                .unwrap(),
            // A lower-casing normalizer, so added tokens are also matched after normalizing.
            Tokenizer::from_hf_dir(&data.join("all-minilm-l6-v2")).unwrap(),
        ];
        for name in ["llama3_1", "qwen3", "mistral_7b", "gemma3"] {
            tokenizers
                .push(Tokenizer::from_hf_dir(&data.join("hf-tokenizers").join(name)).unwrap());
        }
        let texts = [
            "Hello world",
            "<|im_start|>user\nhi<|im_end|> and <|endoftext|>",
            "<|begin_of_text|><|eot_id|>[INST] [CLS] hola [SEP] [MASK]</s><s>",
            "  leading spaces, 12345 digits,\ttabs\n\nnewlines  ",
            "¿Qué cláusulas de rescisión hay? 東京 🙂 naïve",
            "def f(x):\n    return x ** 2  # <|fim_prefix|>",
        ];
        for tok in &tokenizers {
            let Backend::Hf(t, _) = &tok.inner else {
                panic!("{}: not a tokenizers pipeline", tok.origin);
            };
            let mut flagged = (**t).clone();
            flagged.set_encode_special_tokens(true);
            for text in texts {
                let want = flagged.encode(text, false).unwrap().get_ids().to_vec();
                assert_eq!(
                    tok.encode_plain(text).unwrap(),
                    want,
                    "{}: {text:?}",
                    tok.origin
                );
            }
            // And special-token text is still parsed where allowed.
            let parsed = tok.encode(texts[1], false).unwrap();
            let whole = t.encode(texts[1], false).unwrap().get_ids().to_vec();
            assert_eq!(parsed, whole, "{}", tok.origin);
        }
    }
}
