//! Inline reasoning separation (WIRE-5): `<think>…</think>` and
//! `<thinking>…</thinking>` inside streamed text become reasoning, whatever
//! the chunk boundaries — including a tag cut in the middle.
//!
//! Only the shortest suffix that could still grow into a tag is held back;
//! everything else is released at once, so streaming stays unbuffered.

/// A piece of classified text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Text(String),
    Reasoning(String),
}

const TAGS: [(&str, &str); 2] = [("<think>", "</think>"), ("<thinking>", "</thinking>")];

#[derive(Debug, Default)]
pub struct ThinkSplitter {
    pending: String,
    /// The close tag we are waiting for while inside a reasoning block.
    closing: Option<&'static str>,
    /// Drop newlines right after a tag (`</think>\n\nAnswer`).
    trim_start: bool,
}

impl ThinkSplitter {
    pub fn new() -> Self {
        Self::default()
    }

    /// True while inside an unclosed reasoning block.
    pub fn in_reasoning(&self) -> bool {
        self.closing.is_some()
    }

    /// Classifies a delta; segments are appended to `out`.
    pub fn push(&mut self, delta: &str, out: &mut Vec<Segment>) {
        self.pending.push_str(delta);
        loop {
            let found = match self.closing {
                Some(close) => self.pending.find(close).map(|i| (i, close.len(), None)),
                None => TAGS
                    .iter()
                    .filter_map(|(open, close)| {
                        self.pending
                            .find(open)
                            .map(|i| (i, open.len(), Some(*close)))
                    })
                    .min_by_key(|(i, _, _)| *i),
            };
            let Some((at, tag_len, next)) = found else {
                break;
            };
            let before: String = self.pending[..at].to_string();
            self.emit(before, out);
            self.pending.drain(..at + tag_len);
            self.closing = next;
            self.trim_start = true;
        }
        let keep = self.holdback();
        let split = self.pending.len() - keep;
        let ready: String = self.pending[..split].to_string();
        self.pending.drain(..split);
        self.emit(ready, out);
    }

    /// Ends the stream: held-back text is released as what it is. An
    /// unclosed block stays reasoning (it never reaches final text).
    pub fn finish(&mut self, out: &mut Vec<Segment>) {
        let rest = std::mem::take(&mut self.pending);
        self.emit(rest, out);
    }

    /// Length of the longest suffix of `pending` that is a proper prefix of
    /// a tag we might see next.
    fn holdback(&self) -> usize {
        let candidates: Vec<&str> = match self.closing {
            Some(close) => vec![close],
            None => TAGS.iter().map(|(open, _)| *open).collect(),
        };
        let p = &self.pending;
        let mut best = 0;
        for tag in candidates {
            for len in (1..tag.len()).rev() {
                if len <= p.len() && p.is_char_boundary(p.len() - len) && p.ends_with(&tag[..len]) {
                    best = best.max(len);
                    break;
                }
            }
        }
        best
    }

    fn emit(&mut self, mut text: String, out: &mut Vec<Segment>) {
        if self.trim_start {
            let trimmed = text.trim_start_matches(['\n', '\r']);
            if trimmed.is_empty() {
                return;
            }
            text = trimmed.to_string();
            self.trim_start = false;
        }
        if text.is_empty() {
            return;
        }
        let reasoning = self.closing.is_some();
        // Merge with the previous segment of the same kind.
        match (out.last_mut(), reasoning) {
            (Some(Segment::Reasoning(r)), true) => r.push_str(&text),
            (Some(Segment::Text(t)), false) => t.push_str(&text),
            (_, true) => out.push(Segment::Reasoning(text)),
            (_, false) => out.push(Segment::Text(text)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(chunks: &[&str]) -> (String, String) {
        let mut s = ThinkSplitter::new();
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, &mut out);
        }
        s.finish(&mut out);
        let mut text = String::new();
        let mut reasoning = String::new();
        for seg in out {
            match seg {
                Segment::Text(t) => text.push_str(&t),
                Segment::Reasoning(r) => reasoning.push_str(&r),
            }
        }
        (text, reasoning)
    }

    /// Every split of the input into three chunks gives the same result.
    fn every_split(input: &str) -> (String, String) {
        let whole = run(&[input]);
        let idx: Vec<usize> = input
            .char_indices()
            .map(|(i, _)| i)
            .chain([input.len()])
            .collect();
        for &i in &idx {
            for &j in idx.iter().filter(|j| **j >= i) {
                let got = run(&[&input[..i], &input[i..j], &input[j..]]);
                assert_eq!(got, whole, "split at {i},{j}");
            }
        }
        whole
    }

    #[test]
    fn separates_think_blocks_at_any_boundary() {
        let (t, r) = every_split("<think>plan: add 2+2</think>\n\nThe answer is 4.");
        assert_eq!(t, "The answer is 4.");
        assert_eq!(r, "plan: add 2+2");
        let (t, r) = every_split("Hi <thinking>hmm é</thinking>there");
        assert_eq!(t, "Hi there");
        assert_eq!(r, "hmm é");
    }

    #[test]
    fn unclosed_block_stays_reasoning() {
        let (t, r) = every_split("ok <think>still thinking when the stream ended");
        assert_eq!(t, "ok ");
        assert_eq!(r, "still thinking when the stream ended");
    }

    #[test]
    fn lookalikes_stay_text() {
        let (t, r) = every_split("a < b and <thin> or <th");
        assert_eq!(t, "a < b and <thin> or <th");
        assert_eq!(r, "");
    }

    #[test]
    fn streams_without_waiting_for_the_end() {
        let mut s = ThinkSplitter::new();
        let mut out = Vec::new();
        s.push("Hello wor", &mut out);
        assert_eq!(out, vec![Segment::Text("Hello wor".into())]);
        out.clear();
        s.push("ld <thi", &mut out);
        assert_eq!(
            out,
            vec![Segment::Text("ld ".into())],
            "only '<thi' is held"
        );
        out.clear();
        s.push("nk>x", &mut out);
        assert_eq!(out, vec![Segment::Reasoning("x".into())]);
        assert!(s.in_reasoning());
    }
}
