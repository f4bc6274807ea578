//! Weight formats a user can ask for (`--quant`), and what each costs per tensor.

use serde::Serialize;

use crate::error::ArchError;

/// A llama.cpp quantization recipe (`llama_ftype`): a default type plus per-tensor upgrades.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GgufRecipe {
    Q8_0,
    Q6K,
    Q5KM,
    Q5KS,
    Q5_1,
    Q5_0,
    Q4KM,
    Q4KS,
    Q4_1,
    Q4_0,
    Iq4Xs,
    Iq4Nl,
    Q3KL,
    Q3KM,
    Q3KS,
    Q2K,
}

/// The format of a model's weights. Serializes as its name (`"q4_k_m"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WeightFormat {
    F32,
    F16,
    Bf16,
    /// FP8 e4m3 linear weights with per-channel scales; embeddings, head and norms in bf16.
    Fp8,
    /// INT8 weight-only linear layers with per-channel fp16 scales (W8A16).
    Int8,
    /// AWQ 4-bit, group size 128, fp16 scales and 4-bit zero points.
    Awq,
    /// GPTQ 4-bit, group size 128, fp16 scales, 4-bit zeros and an int32 `g_idx` per input column.
    Gptq,
    /// A llama.cpp GGUF quantization.
    Gguf(GgufRecipe),
}

/// Names accepted by [`WeightFormat::parse`], for error messages and `--help`.
pub const KNOWN_FORMATS: &str = "f32, f16, bf16, fp8, int8, awq, gptq, q8_0, q6_k, q5_k_m, q5_k_s, q5_1, q5_0, q4_k_m, q4_k_s, q4_1, q4_0, iq4_xs, iq4_nl, q3_k_l, q3_k_m, q3_k_s, q2_k";

/// Formats in the order of output quality, best first: the order recommendations walk.
pub const QUALITY_ORDER: &[WeightFormat] = &[
    WeightFormat::Bf16,
    WeightFormat::Gguf(GgufRecipe::Q8_0),
    WeightFormat::Gguf(GgufRecipe::Q6K),
    WeightFormat::Gguf(GgufRecipe::Q5KM),
    WeightFormat::Gguf(GgufRecipe::Q4KM),
    WeightFormat::Gguf(GgufRecipe::Q4KS),
    WeightFormat::Gguf(GgufRecipe::Iq4Xs),
    WeightFormat::Gguf(GgufRecipe::Q3KM),
    WeightFormat::Gguf(GgufRecipe::Q2K),
];

impl WeightFormat {
    /// Parses a user-facing name (case-insensitive; `q4_k_m`, `Q4_K_M`, `int4-awq` …).
    pub fn parse(s: &str) -> Result<Self, ArchError> {
        use GgufRecipe::*;
        let norm = s.trim().to_ascii_lowercase().replace('-', "_");
        Ok(match norm.as_str() {
            "f32" | "fp32" | "float32" => WeightFormat::F32,
            "f16" | "fp16" | "float16" => WeightFormat::F16,
            "bf16" | "bfloat16" => WeightFormat::Bf16,
            "fp8" | "f8" | "fp8_e4m3" => WeightFormat::Fp8,
            "int8" | "i8" | "w8a16" => WeightFormat::Int8,
            "awq" | "int4_awq" | "awq_int4" => WeightFormat::Awq,
            "gptq" | "int4_gptq" | "gptq_int4" => WeightFormat::Gptq,
            "q8_0" => WeightFormat::Gguf(Q8_0),
            "q6_k" => WeightFormat::Gguf(Q6K),
            "q5_k_m" | "q5_k" => WeightFormat::Gguf(Q5KM),
            "q5_k_s" => WeightFormat::Gguf(Q5KS),
            "q5_1" => WeightFormat::Gguf(Q5_1),
            "q5_0" => WeightFormat::Gguf(Q5_0),
            "q4_k_m" | "q4_k" => WeightFormat::Gguf(Q4KM),
            "q4_k_s" => WeightFormat::Gguf(Q4KS),
            "q4_1" => WeightFormat::Gguf(Q4_1),
            "q4_0" => WeightFormat::Gguf(Q4_0),
            "iq4_xs" => WeightFormat::Gguf(Iq4Xs),
            "iq4_nl" => WeightFormat::Gguf(Iq4Nl),
            "q3_k_l" => WeightFormat::Gguf(Q3KL),
            "q3_k_m" | "q3_k" => WeightFormat::Gguf(Q3KM),
            "q3_k_s" => WeightFormat::Gguf(Q3KS),
            "q2_k" => WeightFormat::Gguf(Q2K),
            _ => {
                return Err(ArchError::UnknownFormat {
                    given: s.to_string(),
                    known: KNOWN_FORMATS,
                });
            }
        })
    }

    /// Canonical lower-case name, as accepted by [`WeightFormat::parse`].
    pub fn name(self) -> &'static str {
        use GgufRecipe::*;
        match self {
            WeightFormat::F32 => "f32",
            WeightFormat::F16 => "f16",
            WeightFormat::Bf16 => "bf16",
            WeightFormat::Fp8 => "fp8",
            WeightFormat::Int8 => "int8",
            WeightFormat::Awq => "awq",
            WeightFormat::Gptq => "gptq",
            WeightFormat::Gguf(r) => match r {
                Q8_0 => "q8_0",
                Q6K => "q6_k",
                Q5KM => "q5_k_m",
                Q5KS => "q5_k_s",
                Q5_1 => "q5_1",
                Q5_0 => "q5_0",
                Q4KM => "q4_k_m",
                Q4KS => "q4_k_s",
                Q4_1 => "q4_1",
                Q4_0 => "q4_0",
                Iq4Xs => "iq4_xs",
                Iq4Nl => "iq4_nl",
                Q3KL => "q3_k_l",
                Q3KM => "q3_k_m",
                Q3KS => "q3_k_s",
                Q2K => "q2_k",
            },
        }
    }

    /// The nominal bytes per parameter the common rule of thumb uses (FP16 = 2, INT8 = 1,
    /// INT4 = 0.5): the format's headline bit width / 8, ignoring scales and mixed tensors.
    pub fn nominal_bytes_per_param(self) -> f64 {
        use GgufRecipe::*;
        let bits = match self {
            WeightFormat::F32 => 32.0,
            WeightFormat::F16 | WeightFormat::Bf16 => 16.0,
            WeightFormat::Fp8 | WeightFormat::Int8 => 8.0,
            WeightFormat::Awq | WeightFormat::Gptq => 4.0,
            WeightFormat::Gguf(r) => match r {
                Q8_0 => 8.0,
                Q6K => 6.0,
                Q5KM | Q5KS | Q5_1 | Q5_0 => 5.0,
                Q4KM | Q4KS | Q4_1 | Q4_0 | Iq4Xs | Iq4Nl => 4.0,
                Q3KL | Q3KM | Q3KS => 3.0,
                Q2K => 2.0,
            },
        };
        bits / 8.0
    }

    /// True for formats stored as GGUF by llama.cpp-compatible runtimes.
    pub fn is_gguf(self) -> bool {
        matches!(self, WeightFormat::Gguf(_))
    }
}

impl Serialize for WeightFormat {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl std::fmt::Display for WeightFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// KV-cache element formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KvDtype {
    F32,
    F16,
    Bf16,
    Fp8,
    Q8_0,
    Q4_0,
}

impl KvDtype {
    pub fn parse(s: &str) -> Result<Self, ArchError> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "f32" => KvDtype::F32,
            "f16" | "fp16" => KvDtype::F16,
            "bf16" => KvDtype::Bf16,
            "fp8" | "fp8_e4m3" | "fp8_e5m2" => KvDtype::Fp8,
            "q8_0" => KvDtype::Q8_0,
            "q4_0" => KvDtype::Q4_0,
            _ => {
                return Err(ArchError::UnknownFormat {
                    given: s.to_string(),
                    known: "f16, bf16, f32, fp8, q8_0, q4_0",
                });
            }
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            KvDtype::F32 => "f32",
            KvDtype::F16 => "f16",
            KvDtype::Bf16 => "bf16",
            KvDtype::Fp8 => "fp8",
            KvDtype::Q8_0 => "q8_0",
            KvDtype::Q4_0 => "q4_0",
        }
    }

    /// Exact bytes per element, block scales included (q8_0: 34 bytes per 32 values).
    pub fn bytes_per_elem(self) -> f64 {
        match self {
            KvDtype::F32 => 4.0,
            KvDtype::F16 | KvDtype::Bf16 => 2.0,
            KvDtype::Fp8 => 1.0,
            KvDtype::Q8_0 => 34.0 / 32.0,
            KvDtype::Q4_0 => 18.0 / 32.0,
        }
    }
}

impl std::fmt::Display for KvDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
