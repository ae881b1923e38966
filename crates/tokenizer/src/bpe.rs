//! Byte-level BPE merging (llama.cpp's `llm_tokenizer_bpe_session`).

use std::cmp::Reverse;
use std::collections::HashMap;
use std::ops::Range;

use crate::merge::merge_pieces;

/// Merge ranks, looked up by the two sides' text.
pub(crate) struct Merges {
    /// Each distinct merge operand, numbered; most are tokens, but a merge may
    /// name text that is not, so they are kept apart from the vocabulary.
    operands: HashMap<Box<str>, u32>,
    ranks: HashMap<(u32, u32), u32>,
}

impl Merges {
    /// `merges[i]` is `"left right"` with rank `i`. The separator is the first
    /// space after the first byte (so a left side may be a lone space), and a
    /// repeated pair keeps its first rank, as in llama.cpp.
    pub(crate) fn new(merges: &[String]) -> Merges {
        let mut operands: HashMap<Box<str>, u32> = HashMap::new();
        let mut ranks = HashMap::with_capacity(merges.len());
        let mut intern = |s: &str| {
            let next = operands.len() as u32;
            *operands.entry(s.into()).or_insert(next)
        };
        for (rank, merge) in merges.iter().enumerate() {
            let Some(sep) = merge.bytes().skip(1).position(|b| b == b' ') else {
                // llama.cpp records this as an empty pair, which never matches.
                continue;
            };
            let (left, right) = (&merge[..sep + 1], &merge[sep + 2..]);
            let key = (intern(left), intern(right));
            ranks.entry(key).or_insert(rank as u32);
        }
        Merges { operands, ranks }
    }

    fn rank(&self, left: &str, right: &str) -> Option<u32> {
        let l = *self.operands.get(left)?;
        let r = *self.operands.get(right)?;
        self.ranks.get(&(l, r)).copied()
    }

    /// Merges the characters of `word` by rank and returns the final symbols
    /// as byte ranges of `word`.
    pub(crate) fn apply(&self, word: &str) -> Vec<Range<usize>> {
        // The lowest rank merges first.
        merge_pieces(word, |l, r| self.rank(&word[l], &word[r]).map(Reverse))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn merges(list: &[&str]) -> Merges {
        Merges::new(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    fn split<'a>(m: &Merges, word: &'a str) -> Vec<&'a str> {
        m.apply(word).into_iter().map(|r| &word[r]).collect()
    }

    #[test]
    fn merges_by_rank() {
        let m = merges(&["a b", "b c", "ab c"]);
        // "a b" outranks "b c", so "abc" becomes "ab" + "c", then "abc".
        assert_eq!(split(&m, "abc"), ["abc"]);
        let m = merges(&["b c", "a b"]);
        assert_eq!(split(&m, "abc"), ["a", "bc"]);
    }

    #[test]
    fn equal_ranks_go_left_first() {
        let m = merges(&["a a"]);
        assert_eq!(split(&m, "aaa"), ["aa", "a"]);
    }

    #[test]
    fn separator_is_first_space_after_first_byte() {
        // GPT-2 vocabularies write a space as "Ġ", but a raw space may appear.
        let m = merges(&["  x"]);
        assert_eq!(split(&m, " x"), [" x"]);
        let m = merges(&["nospace"]);
        assert_eq!(split(&m, "ab"), ["a", "b"]);
    }
}
