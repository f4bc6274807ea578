//! Constrained decoding: a JSON schema (or "any JSON object") becomes a grammar over the model's
//! own vocabulary (llguidance), and before each token is sampled every token the grammar cannot
//! take next is masked out. The output is then valid by construction, not by retrying.

use std::sync::Arc;

use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{InferenceCapabilities, TokEnv, TokRxInfo, TokTrie, TokenizerEnv};
use llguidance::{Matcher, ParserFactory};
use serde_json::Value;

use crate::error::{EngineError, Result};
use crate::tokenizer::Tokenizer;

/// What the output must be.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputFormat {
    /// Any JSON object.
    JsonObject,
    /// JSON valid against this schema.
    JsonSchema(Value),
    /// A grammar in llguidance's Lark syntax (JSON parts inline with `%json`).
    Lark(String),
}

/// The model's vocabulary as llguidance sees it.
struct VocabEnv {
    tokenizer: Arc<Tokenizer>,
    trie: TokTrie,
}

impl TokenizerEnv for VocabEnv {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<u32> {
        self.tokenizer
            .encode_plain(&String::from_utf8_lossy(s))
            .unwrap_or_default()
    }
}

/// Compiles output formats for one model; built once per model (it indexes the vocabulary).
pub struct GrammarCompiler {
    factory: ParserFactory,
    stop: Vec<u32>,
}

impl std::fmt::Debug for GrammarCompiler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrammarCompiler")
            .field("stop", &self.stop)
            .finish()
    }
}

impl GrammarCompiler {
    pub fn new(tokenizer: Arc<Tokenizer>) -> Result<Self> {
        let n = tokenizer.vocab_size();
        let words: Vec<Vec<u8>> = (0..n as u32)
            .map(|id| {
                let bytes = tokenizer.token_bytes(id).unwrap_or_default();
                if tokenizer.is_control(id) {
                    // llguidance's marker for special tokens: never matched as text.
                    let mut marked = vec![TokTrie::SPECIAL_TOKEN_MARKER];
                    marked.extend(bytes);
                    marked
                } else {
                    bytes
                }
            })
            .collect();
        let stop = tokenizer.special.stop.clone();
        let eos = *stop.first().ok_or_else(|| {
            EngineError::Input("structured output needs a model with an end-of-text token".into())
        })?;
        let mut info = TokRxInfo::new(n as u32, eos);
        info.tok_bos = tokenizer.special.bos;
        info.tok_end_of_turn = stop.get(1).copied();
        let trie = TokTrie::from(&info, &words);
        let env: TokEnv = Arc::new(VocabEnv { tokenizer, trie });
        let mut factory = ParserFactory::new(
            &env,
            InferenceCapabilities::default(),
            &llguidance::earley::SlicedBiasComputer::general_slices(),
        )
        .map_err(|e| {
            EngineError::Input(format!("cannot index the vocabulary for grammars: {e}"))
        })?;
        factory.quiet();
        Ok(GrammarCompiler { factory, stop })
    }

    /// A fresh constraint for one generation; an invalid schema is an error that says why.
    pub fn compile(&self, format: &OutputFormat) -> Result<Constraint> {
        let mut schema = match format {
            OutputFormat::JsonObject => serde_json::json!({"type": "object"}),
            OutputFormat::JsonSchema(s) => s.clone(),
            OutputFormat::Lark(g) => {
                return self.start(TopLevelGrammar::from_lark(g.clone()), "grammar");
            }
        };
        // Compact separators and no free whitespace: small models otherwise pad forever.
        if let Some(obj) = schema.as_object_mut() {
            obj.entry("x-guidance").or_insert_with(|| {
                serde_json::json!({
                    "whitespace_flexible": false,
                    "item_separator": ", ",
                    "key_separator": ": ",
                })
            });
        } else if !schema.is_boolean() {
            return Err(EngineError::Input(
                "a JSON schema must be an object (or true/false)".into(),
            ));
        }
        self.start(TopLevelGrammar::from_json_schema(schema), "JSON schema")
    }

    fn start(&self, grammar: TopLevelGrammar, what: &str) -> Result<Constraint> {
        let parser = self
            .factory
            .create_parser(grammar)
            .map_err(|e| EngineError::Input(format!("invalid {what}: {e}")))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(EngineError::Input(format!("invalid {what}: {e}")));
        }
        Ok(Constraint {
            matcher,
            stop: self.stop.clone(),
        })
    }
}

/// One generation's grammar state.
pub struct Constraint {
    matcher: Matcher,
    stop: Vec<u32>,
}

impl std::fmt::Debug for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Constraint")
            .field("stopped", &self.matcher.is_stopped())
            .finish()
    }
}

impl Constraint {
    /// Sets the logits of every token the grammar does not allow next to −∞ (all end-of-text
    /// tokens count as the grammar's end).
    pub fn mask(&mut self, logits: &mut [f32]) -> Result<()> {
        let allowed = self
            .matcher
            .compute_mask_or_eos()
            .map_err(|e| EngineError::Input(format!("grammar failed: {e}")))?;
        let eos_ok = self.stop.first().is_some_and(|&e| allowed.is_allowed(e));
        for (id, l) in logits.iter_mut().enumerate() {
            let id = id as u32;
            let ok = if self.stop.contains(&id) {
                eos_ok
            } else {
                allowed.is_allowed(id)
            };
            if !ok {
                *l = f32::NEG_INFINITY;
            }
        }
        Ok(())
    }

    /// Advances the grammar past a sampled token.
    pub fn consume(&mut self, token: u32) -> Result<()> {
        // Every end-of-text token ends the grammar the same way.
        let token = if self.stop.contains(&token) {
            self.stop[0]
        } else {
            token
        };
        self.matcher
            .consume_token(token)
            .map_err(|e| EngineError::Input(format!("grammar rejected token {token}: {e}")))
    }

    /// Whether the grammar is complete and admits nothing more.
    pub fn is_done(&self) -> bool {
        self.matcher.is_stopped()
    }
}
