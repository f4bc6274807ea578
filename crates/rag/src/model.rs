//! The models RAG needs, as traits: the crate never depends on the engine that runs them.
//! The `forja` command implements them over its engine; tests implement them with small
//! deterministic functions.

use crate::error::Result;

/// A sentence-embedding model.
pub trait Embedder {
    /// One vector of [`Embedder::dimension`] floats per text, in order. Texts are at most
    /// [`Embedder::max_tokens`] long as [`Embedder::count_tokens`] measures them.
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>>;
    /// Length of every vector.
    fn dimension(&self) -> usize;
    /// Longest input the model reads, in tokens (special tokens included).
    fn max_tokens(&self) -> usize;
    /// Tokens of `text` as the model reads it, special tokens included.
    fn count_tokens(&self, text: &str) -> Result<usize>;
    /// A name for the model, stored with a collection so that a collection is always searched
    /// with the model that embedded it.
    fn name(&self) -> String;
}

/// What deciding how many sources fit a prompt needs to know of a chat model: its context and
/// how many tokens a prompt takes. A server that generates elsewhere (its engine actor) measures
/// through this alone.
pub trait PromptBudget {
    /// Tokens the model's context holds: prompt and answer together.
    fn context_tokens(&self) -> usize;
    /// Tokens the prompt made of `system` and `user` takes, chat template (and whatever else
    /// the prompt carries, such as earlier turns of a conversation) included.
    fn prompt_tokens(&self, system: &str, user: &str) -> Result<usize>;
}

/// A chat model that answers from a prompt.
pub trait Generator: PromptBudget {
    /// Answers `user` under the `system` instruction with at most `max_tokens` tokens; each
    /// piece of text goes to `on_text` as it is generated. Returns the whole answer.
    fn generate(
        &mut self,
        system: &str,
        user: &str,
        max_tokens: usize,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<String>;
}

/// A cross-encoder reranker: reads the query with each passage and scores how well the passage
/// answers it (higher is better). Slower than the first stage's rankings, so it reorders only
/// their best candidates.
pub trait Reranker {
    /// One score per passage, in order.
    fn score(&self, query: &str, passages: &[&str]) -> Result<Vec<f32>>;
    /// The model's name, for messages.
    fn name(&self) -> String;
}
