//! What forja's tokenizer holds in memory, priced from the size of a model's vocabulary.
//!
//! A GGUF file says exactly how many tokens and merges its vocabulary has and how long their
//! texts are; a `config.json` says only how many tokens, so the rest is estimated there.

use crate::gguf::{GgufHeader, GgufValue};

/// How a vocabulary splits text, which decides what the tokenizer keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VocabKind {
    /// Byte-level BPE (GGUF `tokenizer.ggml.model = "gpt2"`; most `tokenizer.json` files).
    BytePairs,
    /// SentencePiece-style scores (GGUF `"llama"`).
    SentencePiece,
}

/// A model's vocabulary, as far as its memory goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenizerShape {
    pub kind: VocabKind,
    pub tokens: u64,
    /// BPE merge rules (0 for SentencePiece vocabularies).
    pub merges: u64,
    /// UTF-8 bytes of every token's text together.
    pub text_bytes: u64,
    /// Counted from the file, not estimated from the vocabulary size.
    pub counted: bool,
}

/// Bytes of text a token averages where a file does not say: 7.5, 9.0 and 8.8 in the
/// vocabularies of SmolLM2, Qwen2.5 and Gemma 3 (their GGUF files).
const AVERAGE_TOKEN_TEXT: u64 = 8;

impl TokenizerShape {
    /// The vocabulary a GGUF header carries (`tokenizer.ggml.*`), or `None` where it has none
    /// of a kind forja reads.
    pub fn from_gguf(header: &GgufHeader) -> Option<Self> {
        let kind = match header.metadata.get("tokenizer.ggml.model") {
            Some(GgufValue::String(m)) if m == "gpt2" => VocabKind::BytePairs,
            Some(GgufValue::String(m)) if m == "llama" => VocabKind::SentencePiece,
            _ => return None,
        };
        let len = |key: &str| match header.metadata.get(key) {
            Some(GgufValue::Array { len, .. }) => Some(*len),
            _ => None,
        };
        let tokens = len("tokenizer.ggml.tokens")?;
        let stored = header.array_bytes.get("tokenizer.ggml.tokens").copied()?;
        Some(TokenizerShape {
            kind,
            tokens,
            merges: len("tokenizer.ggml.merges").unwrap_or(0),
            // Each string is stored as its 8-byte length and its text.
            text_bytes: stored.saturating_sub(8 * tokens),
            counted: true,
        })
    }

    /// A byte-level BPE vocabulary of `tokens` entries with as many merges, each token
    /// [`AVERAGE_TOKEN_TEXT`] bytes long: what a `config.json` leaves to assume.
    pub fn estimated(tokens: u64) -> Self {
        TokenizerShape {
            kind: VocabKind::BytePairs,
            tokens,
            merges: tokens,
            text_bytes: AVERAGE_TOKEN_TEXT * tokens,
            counted: false,
        }
    }

    /// Heap bytes forja's tokenizer holds once loaded. Byte-level BPE: the token → id and
    /// id → token tables (a 32-byte slot each: a `String` and an id) and the merge table (ids
    /// in, rank and id out: 16 bytes), each token's text twice. SentencePiece: the tokens in
    /// id order with their scores and types, and a text → id table. Hash tables hold a power of
    /// two of slots at most 7/8 full, plus a control byte a slot. Not counted: the added
    /// (special) tokens' matchers, a few hundred bytes each, and the encoder's per-thread cache
    /// of recent words, which fills as text is encoded.
    pub fn heap_bytes(&self) -> u64 {
        let (t, text) = (self.tokens, self.text_bytes);
        match self.kind {
            VocabKind::BytePairs => {
                2 * table_bytes(t, 32) + 2 * text + table_bytes(self.merges, 16)
            }
            VocabKind::SentencePiece => (24 + 4 + 4) * t + table_bytes(t, 32) + 2 * text,
        }
    }
}

/// Bytes of a hash table of `items` entries of `slot` bytes, as Rust's standard (SwissTable)
/// maps size it when built from a known count or grown one entry at a time.
fn table_bytes(items: u64, slot: u64) -> u64 {
    if items == 0 {
        return 0;
    }
    let buckets = match items {
        0..4 => 4,
        4..8 => 8,
        _ => (items.saturating_mul(8) / 7).next_power_of_two(),
    };
    // A control byte per slot, and one group's worth repeated at the end.
    buckets * (slot + 1) + 16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_grow_by_powers_of_two_at_seven_eighths() {
        assert_eq!(table_bytes(0, 32), 0);
        assert_eq!(table_bytes(3, 32), 4 * 33 + 16);
        assert_eq!(table_bytes(7, 16), 8 * 17 + 16);
        // 49,152 entries need 56,173 slots: 65,536. 57,344 is the most 65,536 slots take.
        assert_eq!(table_bytes(49_152, 32), 65_536 * 33 + 16);
        assert_eq!(table_bytes(57_344, 32), 65_536 * 33 + 16);
        assert_eq!(table_bytes(57_345, 32), 131_072 * 33 + 16);
    }

    #[test]
    fn an_estimate_is_a_bpe_vocabulary_with_as_many_merges() {
        let e = TokenizerShape::estimated(32_000);
        assert_eq!(
            (e.merges, e.text_bytes, e.counted),
            (32_000, 256_000, false)
        );
        // Two 32k-entry tables (65,536 slots of 33 bytes), the texts twice, the merges' table.
        let want = 2 * (65_536 * 33 + 16) + 2 * 256_000 + (65_536 * 17 + 16);
        assert_eq!(e.heap_bytes(), want);
    }
}
