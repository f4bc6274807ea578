//! SentencePiece-style vocabularies as GGUF stores them (`tokenizer.ggml.model = "llama"`:
//! Llama 2, Mistral v0.1, Phi-3, Gemma): merge adjacent pieces by vocabulary score, fall back to
//! byte tokens (`<0x41>`) for what no piece covers. Follows llama.cpp's SPM tokenizer
//! (`src/llama-vocab.cpp`, `llm_tokenizer_spm_session`) so that GGUF files tokenize as llama.cpp
//! tokenizes them.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

/// Token types of `tokenizer.ggml.token_type`.
pub const TYPE_CONTROL: i32 = 3;
pub const TYPE_USER_DEFINED: i32 = 4;
pub const TYPE_BYTE: i32 = 6;

#[derive(Debug)]
pub struct SpmVocab {
    tokens: Vec<String>,
    scores: Vec<f32>,
    types: Vec<i32>,
    by_text: HashMap<String, u32>,
    byte_tokens: [Option<u32>; 256],
    /// Control and user-defined tokens, matched literally in input text (leftmost, longest).
    specials: SpecialMatcher,
    /// User-defined tokens only: what still matches when control-token text is plain text.
    user_defined: SpecialMatcher,
    unk: Option<u32>,
    add_space_prefix: bool,
}

/// Finds the earliest (longest on ties) of a set of token texts.
#[derive(Debug)]
struct SpecialMatcher {
    matcher: Option<aho_corasick::AhoCorasick>,
    ids: Vec<u32>,
}

impl SpecialMatcher {
    fn new(specials: &[(String, u32)]) -> Result<Self, String> {
        let matcher = if specials.is_empty() {
            None
        } else {
            Some(
                aho_corasick::AhoCorasick::builder()
                    .match_kind(aho_corasick::MatchKind::LeftmostLongest)
                    .build(specials.iter().map(|(t, _)| t))
                    .map_err(|e| format!("special-token matcher: {e}"))?,
            )
        };
        Ok(SpecialMatcher {
            matcher,
            ids: specials.iter().map(|(_, id)| *id).collect(),
        })
    }

    /// `(start, end, id)` of the first special token in `text`.
    fn find(&self, text: &str) -> Option<(usize, usize, u32)> {
        let m = self.matcher.as_ref()?.find(text)?;
        Some((m.start(), m.end(), self.ids[m.pattern().as_usize()]))
    }
}

#[derive(Debug, Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

#[derive(Debug, PartialEq)]
struct Bigram {
    left: usize,
    right: usize,
    score: f32,
    len: usize,
}

impl Eq for Bigram {}

impl Ord for Bigram {
    /// Highest score first; on equal scores the leftmost pair.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then(other.left.cmp(&self.left))
    }
}

impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The byte a `<0x41>`-style token stands for.
pub(crate) fn byte_of(token: &str) -> Option<u8> {
    token
        .strip_prefix("<0x")
        .and_then(|h| h.strip_suffix('>'))
        .and_then(|h| u8::from_str_radix(h, 16).ok())
}

impl SpmVocab {
    pub fn new(
        tokens: Vec<String>,
        scores: Vec<f32>,
        types: Vec<i32>,
        unk: Option<u32>,
        add_space_prefix: bool,
    ) -> Result<Self, String> {
        let by_text: HashMap<String, u32> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let mut byte_tokens = [None; 256];
        for (i, t) in tokens.iter().enumerate() {
            if let Some(b) = byte_of(t).filter(|_| types.get(i) == Some(&TYPE_BYTE)) {
                byte_tokens[b as usize] = Some(i as u32);
            }
        }
        let mut specials: Vec<(String, u32)> = types
            .iter()
            .enumerate()
            .filter(|(i, t)| {
                matches!(**t, TYPE_CONTROL | TYPE_USER_DEFINED) && !tokens[*i].is_empty()
            })
            .map(|(i, _)| (tokens[i].clone(), i as u32))
            .collect();
        specials.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        let user: Vec<(String, u32)> = specials
            .iter()
            .filter(|(_, id)| types.get(*id as usize) == Some(&TYPE_USER_DEFINED))
            .cloned()
            .collect();
        Ok(SpmVocab {
            specials: SpecialMatcher::new(&specials)?,
            user_defined: SpecialMatcher::new(&user)?,
            tokens,
            scores,
            types,
            by_text,
            byte_tokens,
            unk,
            add_space_prefix,
        })
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    pub fn token_to_id(&self, text: &str) -> Option<u32> {
        self.by_text.get(text).copied()
    }

    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    pub fn is_control(&self, id: u32) -> bool {
        self.types.get(id as usize) == Some(&TYPE_CONTROL)
    }

    /// Appends the ids of `text` to `out`. Without `parse_control`, control-token text is plain
    /// text (user-defined tokens still match, as in llama.cpp). `prev_special` says whether the
    /// text follows a special token (or starts the input): SentencePiece then adds its space
    /// prefix. It is updated for the next call.
    pub fn encode_into(
        &self,
        text: &str,
        parse_control: bool,
        prev_special: &mut bool,
        out: &mut Vec<u32>,
    ) {
        let mut rest = text;
        while !rest.is_empty() {
            // The earliest special token in what is left (longest on ties).
            let matcher = if parse_control {
                &self.specials
            } else {
                &self.user_defined
            };
            let (raw, special) = match matcher.find(rest) {
                Some((at, end, id)) => (&rest[..at], Some((id, end))),
                None => (rest, None),
            };
            if !raw.is_empty() {
                let mut piece = String::with_capacity(raw.len() + 3);
                if self.add_space_prefix && *prev_special {
                    piece.push(' ');
                }
                piece.push_str(raw);
                self.encode_piece(&piece.replace(' ', "\u{2581}"), out);
                *prev_special = false;
            }
            match special {
                Some((id, end)) => {
                    out.push(id);
                    *prev_special = true;
                    rest = &rest[end..];
                }
                None => break,
            }
        }
    }

    fn encode_piece(&self, text: &str, out: &mut Vec<u32>) {
        let mut symbols: Vec<Symbol> = Vec::new();
        for (i, (start, ch)) in text.char_indices().enumerate() {
            symbols.push(Symbol {
                start,
                len: ch.len_utf8(),
                prev: i.checked_sub(1),
                next: None,
            });
            if i > 0 {
                symbols[i - 1].next = Some(i);
            }
        }
        let mut queue = BinaryHeap::new();
        let bigram = |symbols: &[Symbol], left: usize, right: usize| -> Option<Bigram> {
            let (l, r) = (symbols[left], symbols[right]);
            let merged = &text[l.start..r.start + r.len];
            self.by_text.get(merged).map(|&id| Bigram {
                left,
                right,
                score: self.scores.get(id as usize).copied().unwrap_or(0.0),
                len: merged.len(),
            })
        };
        for i in 1..symbols.len() {
            queue.extend(bigram(&symbols, i - 1, i));
        }
        while let Some(b) = queue.pop() {
            let (l, r) = (symbols[b.left], symbols[b.right]);
            // Skip pairs made stale by an earlier merge.
            if l.len == 0 || r.len == 0 || l.len + r.len != b.len || l.next != Some(b.right) {
                continue;
            }
            symbols[b.left].len += r.len;
            symbols[b.right].len = 0;
            symbols[b.left].next = r.next;
            if let Some(n) = r.next {
                symbols[n].prev = Some(b.left);
            }
            if let Some(p) = symbols[b.left].prev {
                queue.extend(bigram(&symbols, p, b.left));
            }
            if let Some(n) = symbols[b.left].next {
                queue.extend(bigram(&symbols, b.left, n));
            }
        }
        let mut i = if symbols.is_empty() { None } else { Some(0) };
        while let Some(k) = i {
            let s = symbols[k];
            let piece = &text[s.start..s.start + s.len];
            match self.by_text.get(piece) {
                Some(&id) => out.push(id),
                None => {
                    for b in piece.bytes() {
                        if let Some(id) = self.byte_tokens[b as usize].or(self.unk) {
                            out.push(id);
                        }
                    }
                }
            }
            i = s.next;
        }
    }

    /// The bytes token `id` stands for: a byte token's byte, else its text with `▁` as a space.
    pub fn token_bytes(&self, id: u32) -> Option<Vec<u8>> {
        let t = self.tokens.get(id as usize)?;
        let ty = self.types.get(id as usize).copied().unwrap_or(1);
        if let Some(b) = byte_of(t).filter(|_| ty == TYPE_BYTE) {
            return Some(vec![b]);
        }
        Some(t.replace('\u{2581}', " ").into_bytes())
    }

    /// Text of `ids` (control tokens dropped when `skip_control`); byte tokens are reassembled
    /// into UTF-8 and the space the encoder prefixed to the text is removed from its first token.
    pub fn decode(&self, ids: &[u32], skip_control: bool) -> String {
        let mut bytes = Vec::new();
        for (k, &id) in ids.iter().enumerate() {
            let Some(t) = self.tokens.get(id as usize) else {
                continue;
            };
            let ty = self.types.get(id as usize).copied().unwrap_or(1);
            if ty == TYPE_CONTROL && skip_control {
                continue;
            }
            if let Some(b) = byte_of(t).filter(|_| ty == TYPE_BYTE) {
                bytes.push(b);
                continue;
            }
            let text = t.replace('\u{2581}', " ");
            let text = if k == 0 && self.add_space_prefix {
                text.strip_prefix(' ').unwrap_or(&text).to_string()
            } else {
                text
            };
            bytes.extend_from_slice(text.as_bytes());
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }
}
