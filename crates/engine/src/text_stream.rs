//! Generated tokens → text a client may see: never part of a character, never the start of a
//! stop string that may still complete, nothing from a stop string on.

use crate::error::Result;
use crate::tokenizer::{IncrementalDecoder, Tokenizer};

/// The text of one generation as it grows.
#[derive(Debug)]
pub struct TextStream {
    detok: IncrementalDecoder,
    text: String,
    /// Bytes of `text` already released.
    emitted: usize,
    stops: Vec<String>,
    stopped: bool,
}

impl TextStream {
    /// `prompt` gives the detokenizer its context; an empty stop string means none.
    pub fn new(prompt: &[u32], stops: &[String]) -> Self {
        TextStream {
            detok: IncrementalDecoder::with_context(prompt),
            text: String::new(),
            emitted: 0,
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            stopped: false,
        }
    }

    /// Adds a generated token; returns the text now safe to release and whether a stop string
    /// ended the output (the text is then cut before it).
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> Result<(String, bool)> {
        if self.stopped {
            return Ok((String::new(), true));
        }
        self.text += &self.detok.push(tok, id)?;
        if let Some(pos) = self.first_stop() {
            self.text.truncate(pos.max(self.emitted));
            self.stopped = true;
            return Ok((self.release(self.text.len()), true));
        }
        let safe = safe_prefix_len(&self.text, &self.stops);
        Ok((self.release(safe), false))
    }

    /// The generation ended (a stop token, the budget): releases what was held back, cut at a
    /// stop string if one completes in it; returns that text and whether one did.
    pub fn finish(&mut self, tok: &Tokenizer) -> Result<(String, bool)> {
        if self.stopped {
            return Ok((String::new(), true));
        }
        // Text the incremental decoder still holds (e.g. a character cut by a stop token).
        self.text += &self.detok.finish(tok)?;
        if let Some(pos) = self.first_stop() {
            self.text.truncate(pos.max(self.emitted));
            self.stopped = true;
        }
        Ok((self.release(self.text.len()), self.stopped))
    }

    /// Everything generated so far, up to a stop string.
    pub fn text(&self) -> &str {
        &self.text
    }

    fn first_stop(&self) -> Option<usize> {
        self.stops.iter().filter_map(|s| self.text.find(s)).min()
    }

    fn release(&mut self, upto: usize) -> String {
        if upto <= self.emitted {
            return String::new();
        }
        let piece = self.text[self.emitted..upto].to_string();
        self.emitted = upto;
        piece
    }
}

/// Length of the prefix of `text` that cannot be the start of a stop string.
fn safe_prefix_len(text: &str, stops: &[String]) -> usize {
    let mut safe = text.len();
    for s in stops {
        for k in (1..s.len()).rev() {
            if s.is_char_boundary(k) && text.ends_with(&s[..k]) {
                safe = safe.min(text.len() - k);
                break;
            }
        }
    }
    safe
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_back_possible_stop_prefixes() {
        let stops = ["</answer>".to_string()];
        assert_eq!(safe_prefix_len("hello </an", &stops), 6);
        assert_eq!(safe_prefix_len("hello", &stops), 5);
        assert_eq!(safe_prefix_len("a <", &stops), 2);
    }
}
