//! Answers with citations: the retrieved chunks that are relevant enough become numbered
//! sources in the prompt, as many as the chat model's context holds next to the answer; the
//! model is told to answer only from them and to cite them as [1], [2]. When no chunk is
//! relevant, the model is not called at all.

use crate::error::{RagError, Result};
use crate::model::{Generator, PromptBudget};
use crate::retrieve::Hit;

/// The instruction every answer is generated under.
pub const SYSTEM_PROMPT: &str = "You answer questions using only the numbered sources given \
with the question. Cite the sources that support each statement as [1], [2] and so on. If the \
sources do not contain the answer, say that you do not know.";

/// Limits of an answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AnswerOptions {
    /// Tokens reserved for the answer.
    pub max_answer_tokens: usize,
    /// Least cosine similarity between question and chunk for the chunk to be a source. A hit
    /// without a similarity (keyword search) always passes.
    pub min_similarity: f32,
}

impl Default for AnswerOptions {
    /// 512 answer tokens; a similarity of 0.3, under which all-MiniLM-L6-v2 rarely finds a
    /// passage on the question's topic.
    fn default() -> Self {
        AnswerOptions {
            max_answer_tokens: 512,
            min_similarity: 0.3,
        }
    }
}

/// An answer and the sources its citation numbers refer to (`[n]` is `sources[n - 1]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub text: String,
    pub sources: Vec<Hit>,
}

/// The hits relevant enough to answer from, in their order.
pub fn relevant(hits: Vec<Hit>, min_similarity: f32) -> Vec<Hit> {
    hits.into_iter()
        .filter(|h| h.similarity.is_none_or(|s| s >= min_similarity))
        .collect()
}

/// A source's heading: `file, section, page N`.
pub fn source_label(hit: &Hit) -> String {
    let file = hit.source.file_name().map_or_else(
        || hit.source.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let mut label = file;
    if !hit.section.is_empty() {
        label += &format!(", {}", hit.section.join(" > "));
    }
    if let Some(p) = hit.page {
        label += &format!(", page {p}");
    }
    label
}

/// The user turn: the numbered sources, then the question.
pub fn user_prompt(question: &str, sources: &[Hit]) -> String {
    let mut out = String::from("Sources:\n\n");
    for (i, h) in sources.iter().enumerate() {
        out += &format!("[{}] {}\n{}\n\n", i + 1, source_label(h), h.text.trim());
    }
    out += &format!("Question: {question}");
    out
}

/// The sources that fit the generator's context with `max_answer_tokens` left for the answer:
/// the first ones of `hits`, in order.
pub fn fit_sources(
    generator: &dyn PromptBudget,
    question: &str,
    hits: Vec<Hit>,
    max_answer_tokens: usize,
) -> Result<Vec<Hit>> {
    let budget = generator
        .context_tokens()
        .checked_sub(max_answer_tokens)
        .filter(|b| *b > 0)
        .ok_or_else(|| {
            RagError::Input(format!(
                "the model's context of {} tokens leaves no room for a prompt next to {} answer \
                 tokens",
                generator.context_tokens(),
                max_answer_tokens
            ))
        })?;
    let mut used: Vec<Hit> = Vec::new();
    for h in hits {
        used.push(h);
        if generator.prompt_tokens(SYSTEM_PROMPT, &user_prompt(question, &used))? > budget {
            used.pop();
            break;
        }
    }
    if used.is_empty() {
        return Err(RagError::Input(format!(
            "not even one source fits the model's context of {} tokens with {max_answer_tokens} \
             answer tokens: lower --max-tokens or use a model with a longer context",
            generator.context_tokens()
        )));
    }
    Ok(used)
}

/// What is said instead of an answer when no retrieved chunk of `collection` is relevant: the
/// model is not asked, so it cannot invent one.
pub fn nothing_relevant(collection: &str) -> String {
    format!(
        "I found nothing relevant to this question in collection {collection:?}, so I cannot \
         answer it from its documents."
    )
}

/// Answers `question` from `hits` (best first). `None` when no hit is relevant enough: the
/// model is not asked to answer without sources. Answer text streams to `on_text`.
pub fn answer(
    generator: &mut dyn Generator,
    question: &str,
    hits: Vec<Hit>,
    options: AnswerOptions,
    on_text: &mut dyn FnMut(&str),
) -> Result<Option<Answer>> {
    let hits = relevant(hits, options.min_similarity);
    if hits.is_empty() {
        return Ok(None);
    }
    let sources = fit_sources(&*generator, question, hits, options.max_answer_tokens)?;
    let text = generator.generate(
        SYSTEM_PROMPT,
        &user_prompt(question, &sources),
        options.max_answer_tokens,
        on_text,
    )?;
    Ok(Some(Answer { text, sources }))
}
