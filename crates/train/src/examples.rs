//! Conversations as token ids with the trained tokens marked, and the train / eval split.

use forja_engine::LoadedModel;

use crate::dataset::Record;
use crate::error::{Result, TrainError};
use crate::rng::Rng;

/// One training sequence, or several packed one after another.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub ids: Vec<u32>,
    /// Per id: whether the loss includes predicting it (the assistant's tokens).
    pub trained: Vec<bool>,
    /// The lengths of the sequences packed in `ids` ([`pack`]): each is read from position 0
    /// and attends only to itself. Empty: `ids` is one sequence.
    pub packed: Vec<usize>,
}

impl Example {
    /// One sequence.
    pub fn new(ids: Vec<u32>, trained: Vec<bool>) -> Self {
        Example {
            ids,
            trained,
            packed: Vec::new(),
        }
    }

    /// The index ranges of the sequences in `ids`.
    pub fn sequences(&self) -> Vec<std::ops::Range<usize>> {
        if self.packed.is_empty() {
            return std::iter::once(0..self.ids.len()).collect();
        }
        let mut start = 0;
        self.packed
            .iter()
            .map(|&n| {
                start += n;
                start - n..start
            })
            .collect()
    }

    /// Tokens whose prediction counts in the loss (a sequence's first token is never
    /// predicted).
    pub fn trained_tokens(&self) -> usize {
        self.sequences()
            .into_iter()
            .map(|r| self.trained[r].iter().skip(1).filter(|&&t| t).count())
            .sum()
    }
}

/// Packs `examples` into examples of at most `max_tokens` tokens (first fit, longest first), so
/// that a forward pass holds several short sequences; each keeps its own positions and attends
/// only to itself, so the loss is the one of the examples taken one by one.
pub fn pack(examples: Vec<Example>, max_tokens: usize) -> Result<Vec<Example>> {
    if let Some(long) = examples.iter().find(|e| e.ids.len() > max_tokens) {
        return Err(TrainError::Config(format!(
            "an example of {} tokens does not fit a pack of {max_tokens}",
            long.ids.len()
        )));
    }
    let mut order: Vec<usize> = (0..examples.len()).collect();
    // Stable: equal lengths keep their order, so packing is deterministic.
    order.sort_by_key(|&i| std::cmp::Reverse(examples[i].ids.len()));
    let mut bins: Vec<Vec<usize>> = Vec::new();
    let mut room: Vec<usize> = Vec::new();
    for i in order {
        let n = examples[i].ids.len();
        match room.iter().position(|&r| r >= n) {
            Some(b) => {
                bins[b].push(i);
                room[b] -= n;
            }
            None => {
                bins.push(vec![i]);
                room.push(max_tokens - n);
            }
        }
    }
    let mut slots: Vec<Option<Example>> = examples.into_iter().map(Some).collect();
    let mut out = Vec::with_capacity(bins.len());
    for bin in bins {
        let mut p = Example::new(Vec::new(), Vec::new());
        for i in bin {
            let Some(e) = slots.get_mut(i).and_then(Option::take) else {
                continue;
            };
            for r in e.sequences() {
                p.packed.push(r.len());
                p.ids.extend_from_slice(&e.ids[r.clone()]);
                p.trained.extend_from_slice(&e.trained[r]);
            }
        }
        out.push(p);
    }
    Ok(out)
}

/// What tokenizing a dataset did besides producing examples.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TokenizeStats {
    /// Examples cut to the length limit.
    pub truncated: usize,
    /// Records left out because nothing to learn remained within the length limit.
    pub dropped: Vec<String>,
}

/// A `text` record as the model reads a document: BOS where the model adds it, the text (its
/// special-token look-alikes kept as text), EOS; every token after the first is trained.
fn text_example(
    model: &LoadedModel,
    text: &str,
) -> std::result::Result<Example, forja_engine::EngineError> {
    // What `forja run --raw` sends for the text, then the end of the document.
    let mut ids = model.completion_prompt(text)?;
    let tok = &model.tokenizer;
    let eos = Some(tok.special.eos_text.as_str())
        .filter(|t| !t.is_empty())
        .and_then(|t| tok.token_to_id(t));
    ids.extend(eos);
    let trained = (0..ids.len()).map(|i| i > 0).collect();
    Ok(Example::new(ids, trained))
}

/// Each record through the model's chat template (a `text` record as written); sequences
/// longer than `max_len` tokens keep their first `max_len`.
pub fn tokenize(
    model: &LoadedModel,
    records: &[Record],
    max_len: usize,
    path: &std::path::Path,
) -> Result<(Vec<Example>, TokenizeStats)> {
    if max_len < 2 {
        return Err(TrainError::Config(format!(
            "a sequence length limit of {max_len} tokens leaves nothing to predict"
        )));
    }
    let mut stats = TokenizeStats::default();
    let mut out = Vec::with_capacity(records.len());
    for r in records {
        let dataset_err = |e: forja_engine::EngineError| TrainError::Dataset {
            path: path.to_path_buf(),
            at: r.at.clone(),
            what: e.to_string(),
        };
        let mut ex = match &r.text {
            Some(text) => text_example(model, text).map_err(dataset_err)?,
            None => {
                let labeled = model
                    .chat_training_ids(&r.messages, r.tools.as_ref())
                    .map_err(dataset_err)?;
                Example::new(labeled.ids, labeled.trained)
            }
        };
        if ex.ids.len() > max_len {
            ex.ids.truncate(max_len);
            ex.trained.truncate(max_len);
            stats.truncated += 1;
        }
        if ex.trained_tokens() == 0 {
            stats.dropped.push(r.at.clone());
            continue;
        }
        out.push(ex);
    }
    if out.is_empty() {
        return Err(TrainError::Dataset {
            path: path.to_path_buf(),
            at: "all records".into(),
            what: format!(
                "no record has an assistant token (or a `text` token) within the first \
                 {max_len} tokens"
            ),
        });
    }
    Ok((out, stats))
}

/// Splits off `eval_fraction` of the examples (at least one when the fraction is above zero and
/// two or more examples exist), chosen by a seeded shuffle. Returns (train, eval).
pub fn split(
    examples: Vec<Example>,
    eval_fraction: f64,
    seed: u64,
) -> Result<(Vec<Example>, Vec<Example>)> {
    if !(0.0..1.0).contains(&eval_fraction) {
        return Err(TrainError::Config(format!(
            "eval split {eval_fraction} outside [0, 1)"
        )));
    }
    if eval_fraction == 0.0 || examples.len() < 2 {
        return Ok((examples, Vec::new()));
    }
    let n_eval =
        ((examples.len() as f64 * eval_fraction).round() as usize).clamp(1, examples.len() - 1);
    let mut order: Vec<usize> = (0..examples.len()).collect();
    Rng::new(seed ^ 0x5EED_E7A1).shuffle(&mut order);
    let eval_set: std::collections::HashSet<usize> = order[..n_eval].iter().copied().collect();
    let mut train = Vec::with_capacity(examples.len() - n_eval);
    let mut eval = Vec::with_capacity(n_eval);
    for (i, ex) in examples.into_iter().enumerate() {
        if eval_set.contains(&i) {
            eval.push(ex);
        } else {
            train.push(ex);
        }
    }
    Ok((train, eval))
}
