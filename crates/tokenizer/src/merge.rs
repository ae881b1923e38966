//! The pairwise merge loop shared by llama.cpp's BPE and SentencePiece
//! sessions: adjacent pieces merge best-first (ties: leftmost first), and
//! each merge re-ranks the new piece with its neighbours.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::ops::Range;

/// Merges the characters of `text`; `priority(left, right)` ranks merging
/// two adjacent pieces (given as byte ranges; `None`: they cannot merge),
/// the greatest first. Returns the final pieces as byte ranges.
pub(crate) fn merge_pieces<P: Ord>(
    text: &str,
    priority: impl Fn(Range<usize>, Range<usize>) -> Option<P>,
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
    let push = |queue: &mut BinaryHeap<Candidate<P>>, syms: &[Symbol], l: usize, r: usize| {
        let (a, b) = (&syms[l], &syms[r]);
        if let Some(priority) = priority(a.start..a.start + a.len, b.start..b.start + b.len) {
            queue.push(Candidate {
                priority,
                left: l,
                right: r,
                size: a.len + b.len,
            });
        }
    };
    for i in 1..n {
        push(&mut queue, &syms, i - 1, i);
    }
    while let Some(c) = queue.pop() {
        let (l, r) = (c.left, c.right);
        // A candidate is stale once either side changed; sides only grow
        // or vanish, so comparing sizes is enough (llama.cpp compares the
        // text, which is equivalent).
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
    /// 0 once merged into its left neighbour.
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

struct Candidate<P> {
    priority: P,
    left: usize,
    right: usize,
    size: usize,
}

impl<P: Ord> Ord for Candidate<P> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.priority
            .cmp(&other.priority)
            .then(other.left.cmp(&self.left))
    }
}

impl<P: Ord> PartialOrd for Candidate<P> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<P: Ord> PartialEq for Candidate<P> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl<P: Ord> Eq for Candidate<P> {}
