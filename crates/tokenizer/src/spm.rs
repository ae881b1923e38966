//! SentencePiece merging (llama.cpp's `llm_tokenizer_spm_session`): adjacent
//! pieces whose concatenation is a token merge, highest score first.

use std::cmp::Ordering;
use std::ops::Range;

use crate::merge::merge_pieces;

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
    // Live neighbours are contiguous in `text`.
    merge_pieces(text, |l, r| {
        token(&text[l.start..r.end]).map(|id| Score(score(id)))
    })
}

/// A merge's score; the highest goes first.
struct Score(f32);

impl Score {
    /// C++ compares floats with `<`, for which -0.0 == 0.0; fold the zeros so
    /// the total order agrees.
    fn key(&self) -> f32 {
        if self.0 == 0.0 {
            0.0
        } else {
            self.0
        }
    }
}

impl Ord for Score {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().total_cmp(&other.key())
    }
}

impl PartialOrd for Score {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Score {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Score {}

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
