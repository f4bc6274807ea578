//! Tiny HF model folders written by the tests: config.json, random weights in a real
//! safetensors file, a byte-level BPE tokenizer.json with merges and special tokens, and a
//! tokenizer_config.json with a chat template.

#![allow(dead_code, reason = "each test file uses part of the helpers")]

use std::path::Path;

use serde_json::{Value, json};

/// Hidden size 256 and MLP 512, so k-quants apply to every projection (rows of 256 values).
pub const HIDDEN: usize = 256;
pub const FFN: usize = 512;
pub const LAYERS: usize = 2;
pub const HEADS: usize = 4;
pub const KV_HEADS: usize = 2;
/// 256 byte tokens, 2 merges, 2 special tokens; the embedding has 4 unused rows more.
pub const VOCAB: usize = 264;

pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f32 {
        let u = ((self.next() >> 40) as f32 / (1u64 << 24) as f32).max(1e-7);
        let v = (self.next() >> 40) as f32 / (1u64 << 24) as f32;
        (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
    }
}

/// Writes a safetensors file of `(name, shape, dtype, f32 values)`; dtype F32, F16 or BF16.
pub fn write_safetensors(path: &Path, tensors: &[(String, Vec<usize>, &str, Vec<f32>)]) {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, shape, dtype, values) in tensors {
        let start = data.len();
        for v in values {
            match *dtype {
                "F32" => data.extend_from_slice(&v.to_le_bytes()),
                "F16" => data.extend_from_slice(&half::f16::from_f32(*v).to_le_bytes()),
                "BF16" => data.extend_from_slice(&half::bf16::from_f32(*v).to_le_bytes()),
                "I32" => data.extend_from_slice(&(*v as i32).to_le_bytes()),
                other => panic!("dtype {other}"),
            }
        }
        header.insert(
            name.clone(),
            json!({"dtype": dtype, "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    let mut text = serde_json::to_vec(&Value::Object(header)).unwrap();
    while !(text.len() + 8).is_multiple_of(8) {
        text.push(b' ');
    }
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&text);
    out.extend_from_slice(&data);
    std::fs::write(path, out).unwrap();
}

/// GPT-2's byte → character map.
fn byte_char(b: u8) -> char {
    let printable = |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || b >= 174;
    if printable(u32::from(b)) {
        return char::from(b);
    }
    let n = (0..u32::from(b)).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + n).unwrap()
}

pub fn write_tokenizer(dir: &Path) {
    let mut vocab = serde_json::Map::new();
    for b in 0..=255u8 {
        vocab.insert(byte_char(b).to_string(), json!(b));
    }
    vocab.insert("he".into(), json!(256));
    vocab.insert("ll".into(), json!(257));
    let tok = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [
            {"id": 258, "content": "<|im_start|>", "single_word": false, "lstrip": false,
             "rstrip": false, "normalized": false, "special": true},
            {"id": 259, "content": "<|im_end|>", "single_word": false, "lstrip": false,
             "rstrip": false, "normalized": false, "special": true}
        ],
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
                          "use_regex": true},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true,
                    "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null,
                  "continuing_subword_prefix": null, "end_of_word_suffix": null,
                  "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": [["h", "e"], ["l", "l"]]}
    });
    std::fs::write(dir.join("tokenizer.json"), tok.to_string()).unwrap();
    let cfg = json!({
        "bos_token": null,
        "eos_token": "<|im_end|>",
        "pad_token": "<|im_end|>",
        "add_bos_token": false,
        "chat_template": "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    });
    std::fs::write(dir.join("tokenizer_config.json"), cfg.to_string()).unwrap();
}

/// A tiny random `model_type` ("llama" or "qwen2") folder with weights stored as `dtype`.
pub fn write_model(dir: &Path, model_type: &str, dtype: &str, seed: u64) {
    let qwen = model_type == "qwen2";
    let config = json!({
        "architectures": [if qwen { "Qwen2ForCausalLM" } else { "LlamaForCausalLM" }],
        "model_type": model_type,
        "vocab_size": VOCAB,
        "hidden_size": HIDDEN,
        "intermediate_size": FFN,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "max_position_embeddings": 512,
        "rms_norm_eps": 1e-6,
        "rope_theta": if qwen { 1_000_000.0 } else { 10_000.0 },
        "tie_word_embeddings": qwen,
        "hidden_act": "silu",
        "torch_dtype": "float32",
        "eos_token_id": 259,
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let mut rng = Rng::new(seed);
    let mut small = Rng::new(seed ^ 0xABCD);
    let t = Vec::new();
    let mut t: Vec<(String, Vec<usize>, &str, Vec<f32>)> = t;
    let mut mat = |name: String, rows: usize, cols: usize, std: f32, t: &mut Vec<_>| {
        let v: Vec<f32> = (0..rows * cols).map(|_| std * rng.normal()).collect();
        t.push((name, vec![rows, cols], dtype, v));
    };
    let hd = HIDDEN / HEADS;
    let s = 1.0 / (HIDDEN as f32).sqrt();
    mat(
        "model.embed_tokens.weight".into(),
        VOCAB,
        HIDDEN,
        1.0,
        &mut t,
    );
    if !qwen {
        mat("lm_head.weight".into(), VOCAB, HIDDEN, s, &mut t);
    }
    for l in 0..LAYERS {
        let p = format!("model.layers.{l}");
        mat(
            format!("{p}.self_attn.q_proj.weight"),
            HEADS * hd,
            HIDDEN,
            s,
            &mut t,
        );
        mat(
            format!("{p}.self_attn.k_proj.weight"),
            KV_HEADS * hd,
            HIDDEN,
            s,
            &mut t,
        );
        mat(
            format!("{p}.self_attn.v_proj.weight"),
            KV_HEADS * hd,
            HIDDEN,
            s,
            &mut t,
        );
        mat(
            format!("{p}.self_attn.o_proj.weight"),
            HIDDEN,
            HEADS * hd,
            s,
            &mut t,
        );
        mat(format!("{p}.mlp.gate_proj.weight"), FFN, HIDDEN, s, &mut t);
        mat(format!("{p}.mlp.up_proj.weight"), FFN, HIDDEN, s, &mut t);
        mat(
            format!("{p}.mlp.down_proj.weight"),
            HIDDEN,
            FFN,
            1.0 / (FFN as f32).sqrt(),
            &mut t,
        );
        for n in ["input_layernorm", "post_attention_layernorm"] {
            let v: Vec<f32> = (0..HIDDEN).map(|_| 1.0 + 0.1 * small.normal()).collect();
            t.push((format!("{p}.{n}.weight"), vec![HIDDEN], dtype, v));
        }
        if qwen {
            for (proj, n) in [
                ("q", HEADS * hd),
                ("k", KV_HEADS * hd),
                ("v", KV_HEADS * hd),
            ] {
                let v: Vec<f32> = (0..n).map(|_| 0.1 * small.normal()).collect();
                t.push((format!("{p}.self_attn.{proj}_proj.bias"), vec![n], dtype, v));
            }
        }
    }
    let v: Vec<f32> = (0..HIDDEN).map(|_| 1.0 + 0.1 * small.normal()).collect();
    t.push(("model.norm.weight".into(), vec![HIDDEN], dtype, v));
    write_safetensors(&dir.join("model.safetensors"), &t);
    write_tokenizer(dir);
}
