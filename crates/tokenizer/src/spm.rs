//! SentencePiece merging (llama.cpp's `llm_tokenizer_spm_session`): adjacent
//! pieces whose concatenation is a token merge, highest score first.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::ops::Range;

/// Merges the characters of `text` and returns the final pieces as byte
/// ranges. `token` gives the id of a piece that is a token, `score` its score.
///
/// llama.cpp also keeps a map to re-split pieces that are not tokens, but a
/// piece only grows by merging into a token, so a non-token piece is always a
/// single character and that map never applies; such pieces fall back to
/// bytes in the caller.
pub(crate) fn merge(
    text: &str,
    token: impl Fn(&str) -> Option<u32>,
    score: impl Fn(u32) -> f32,
) -> Vec<Range<usize>> {
    let mut syms: Vec<Symbol> = text
        .char_indices()
        .map(|(start, c)| Symbol {
            start,
            len: c.len_utf8(),
            prev: None,
            next: None,
        })
        .collect();
    let n = syms.len();
    for (i, s) in syms.iter_mut().enumerate() {
        s.prev = i.checked_sub(1);
        s.next = (i + 1 < n).then_some(i + 1);
    }

    let mut queue = BinaryHeap::new();
    let push = |queue: &mut BinaryHeap<Candidate>, syms: &[Symbol], l: usize, r: usize| {
        let start = syms[l].start;
        // Live neighbours are contiguous in `text`.
        let size = syms[l].len + syms[r].len;
        if let Some(id) = token(&text[start..start + size]) {
            queue.push(Candidate {
                score: score(id),
                left: l,
                right: r,
                size,
            });
        }
    };
    for i in 1..n {
        push(&mut queue, &syms, i - 1, i);
    }
    while let Some(c) = queue.pop() {
        let (l, r) = (c.left, c.right);
        // Stale once either side merged elsewhere (sides only grow).
        if syms[l].len == 0 || syms[r].len == 0 || syms[l].len + syms[r].len != c.size {
            continue;
        }
        syms[l].len += syms[r].len;
        syms[r].len = 0;
        syms[l].next = syms[r].next;
        if let Some(next) = syms[r].next {
            syms[next].prev = Some(l);
        }
        if let Some(prev) = syms[l].prev {
            push(&mut queue, &syms, prev, l);
        }
        if let Some(next) = syms[l].next {
            push(&mut queue, &syms, l, next);
        }
    }
    syms.iter()
        .filter(|s| s.len > 0)
        .map(|s| s.start..s.start + s.len)
        .collect()
}

#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

/// A possible merge; the highest score, then the leftmost, goes first.
struct Candidate {
    score: f32,
    left: usize,
    right: usize,
    size: usize,
}

impl Candidate {
    /// C++ compares floats with `<`, for which -0.0 == 0.0; fold the zeros so
    /// the total order agrees.
    fn key(&self) -> f32 {
        if self.score == 0.0 {
            0.0
        } else {
            self.score
        }
    }
}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key()
            .total_cmp(&other.key())
            .then(other.left.cmp(&self.left))
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Candidate {}

#[cfg(test)]
mod tests {
    use super::*;

    fn run<'a>(text: &'a str, vocab: &[(&str, f32)]) -> Vec<&'a str> {
        let token = |s: &str| vocab.iter().position(|(t, _)| *t == s).map(|i| i as u32);
        let score = |id: u32| vocab[id as usize].1;
        merge(text, token, score)
            .into_iter()
            .map(|r| &text[r])
            .collect()
    }

    #[test]
    fn merges_highest_score_first() {
        let vocab = [("ab", -1.0), ("bc", -0.5)];
        assert_eq!(run("abc", &vocab), ["a", "bc"]);
        let vocab = [("ab", -0.1), ("bc", -0.5), ("abc", -2.0)];
        assert_eq!(run("abc", &vocab), ["abc"]);
    }

    #[test]
    fn multibyte_characters_stay_whole() {
        assert_eq!(run("é▁x", &[]), ["é", "▁", "x"]);
    }
}
