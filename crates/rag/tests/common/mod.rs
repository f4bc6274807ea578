//! A small deterministic embedding model for the tests: words hashed into a bag of 64
//! buckets, L2-normalized. Texts that share words are close; the store and search are real.

#![allow(dead_code, reason = "each test file uses part of it")]

use std::cell::Cell;

use forja_rag::{Embedder, RagError, Result};

pub const DIM: usize = 64;

pub fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

#[derive(Debug, Default)]
pub struct BagOfWords {
    /// Fails every call to `embed` after this many successful ones.
    pub fail_after: Option<usize>,
    pub calls: Cell<usize>,
}

impl BagOfWords {
    pub fn failing_after(n: usize) -> Self {
        BagOfWords {
            fail_after: Some(n),
            calls: Cell::new(0),
        }
    }
}

pub fn bucket(word: &str) -> usize {
    // FNV-1a
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in word.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % DIM as u64) as usize
}

pub fn bow(text: &str) -> Vec<f32> {
    let mut v = vec![0.0f32; DIM];
    for w in words(text) {
        v[bucket(&w)] += 1.0;
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    } else {
        v[0] = 1.0;
    }
    v
}

impl Embedder for BagOfWords {
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        if let Some(n) = self.fail_after
            && self.calls.get() >= n
        {
            return Err(RagError::Embedding(
                "the test model fails on purpose".into(),
            ));
        }
        self.calls.set(self.calls.get() + 1);
        Ok(texts.iter().map(|t| bow(t)).collect())
    }
    fn dimension(&self) -> usize {
        DIM
    }
    fn max_tokens(&self) -> usize {
        128
    }
    fn count_tokens(&self, text: &str) -> Result<usize> {
        Ok(words(text).count() + 2)
    }
    fn name(&self) -> String {
        "test-bag-of-words-64".into()
    }
}
