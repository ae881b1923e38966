//! `std::sort` as GCC's libstdc++ implements it (introsort: median-of-three
//! quicksort, heapsort past a depth limit, final insertion sort).
//!
//! llama.cpp orders its special tokens with `std::sort` by length alone, so
//! equal-length tokens end up in whatever order that unstable sort leaves
//! them, and that order decides which token wins where matches interact (a
//! token whose right-strip swallows another whitespace token, for one).
//! Reproducing the algorithm step for step reproduces the order that the
//! Linux builds of llama.cpp use.

const THRESHOLD: usize = 16;

/// Sorts `v` exactly as libstdc++'s `std::sort(v.begin(), v.end(), less)`.
/// `less` must be a strict weak order.
pub(crate) fn sort<T: Copy>(v: &mut [T], less: impl Fn(&T, &T) -> bool) {
    let n = v.len();
    if n == 0 {
        return;
    }
    let depth_limit = 2 * n.ilog2() as usize;
    introsort_loop(v, 0, n, depth_limit, &less);
    final_insertion_sort(v, &less);
}

fn introsort_loop<T: Copy>(
    v: &mut [T],
    first: usize,
    mut last: usize,
    mut depth_limit: usize,
    less: &impl Fn(&T, &T) -> bool,
) {
    while last - first > THRESHOLD {
        if depth_limit == 0 {
            heap_sort(&mut v[first..last], less);
            return;
        }
        depth_limit -= 1;
        let cut = partition_pivot(v, first, last, less);
        introsort_loop(v, cut, last, depth_limit, less);
        last = cut;
    }
}

fn partition_pivot<T: Copy>(
    v: &mut [T],
    first: usize,
    last: usize,
    less: &impl Fn(&T, &T) -> bool,
) -> usize {
    let mid = first + (last - first) / 2;
    move_median_to_first(v, first, first + 1, mid, last - 1, less);
    unguarded_partition(v, first + 1, last, first, less)
}

fn move_median_to_first<T: Copy>(
    v: &mut [T],
    result: usize,
    a: usize,
    b: usize,
    c: usize,
    less: &impl Fn(&T, &T) -> bool,
) {
    let lt = |x: usize, y: usize| less(&v[x], &v[y]);
    let median = if lt(a, b) {
        if lt(b, c) {
            b
        } else if lt(a, c) {
            c
        } else {
            a
        }
    } else if lt(a, c) {
        a
    } else if lt(b, c) {
        c
    } else {
        b
    };
    v.swap(result, median);
}

/// Hoare partition around `v[pivot]` (which lies before `first`); the
/// median-of-three choice guarantees both scans stop inside the range.
fn unguarded_partition<T: Copy>(
    v: &mut [T],
    mut first: usize,
    mut last: usize,
    pivot: usize,
    less: &impl Fn(&T, &T) -> bool,
) -> usize {
    loop {
        while less(&v[first], &v[pivot]) {
            first += 1;
        }
        last -= 1;
        while less(&v[pivot], &v[last]) {
            last -= 1;
        }
        if first >= last {
            return first;
        }
        v.swap(first, last);
        first += 1;
    }
}

fn final_insertion_sort<T: Copy>(v: &mut [T], less: &impl Fn(&T, &T) -> bool) {
    if v.len() > THRESHOLD {
        insertion_sort(&mut v[..THRESHOLD], less);
        // The first THRESHOLD elements hold the minimum, which stops the
        // unguarded scans.
        for i in THRESHOLD..v.len() {
            unguarded_linear_insert(v, i, less);
        }
    } else {
        insertion_sort(v, less);
    }
}

fn insertion_sort<T: Copy>(v: &mut [T], less: &impl Fn(&T, &T) -> bool) {
    for i in 1..v.len() {
        if less(&v[i], &v[0]) {
            let value = v[i];
            v.copy_within(0..i, 1);
            v[0] = value;
        } else {
            unguarded_linear_insert(v, i, less);
        }
    }
}

fn unguarded_linear_insert<T: Copy>(v: &mut [T], mut last: usize, less: &impl Fn(&T, &T) -> bool) {
    let value = v[last];
    while less(&value, &v[last - 1]) {
        v[last] = v[last - 1];
        last -= 1;
    }
    v[last] = value;
}

/// `std::make_heap` then `std::sort_heap`, as `std::__partial_sort` does for
/// the whole range.
fn heap_sort<T: Copy>(v: &mut [T], less: &impl Fn(&T, &T) -> bool) {
    let len = v.len();
    if len >= 2 {
        let mut parent = (len - 2) / 2;
        loop {
            let value = v[parent];
            adjust_heap(v, parent, len, value, less);
            if parent == 0 {
                break;
            }
            parent -= 1;
        }
    }
    let mut last = len;
    while last > 1 {
        last -= 1;
        let value = v[last];
        v[last] = v[0];
        adjust_heap(v, 0, last, value, less);
    }
}

fn adjust_heap<T: Copy>(
    v: &mut [T],
    mut hole: usize,
    len: usize,
    value: T,
    less: &impl Fn(&T, &T) -> bool,
) {
    let top = hole;
    let mut child = hole;
    while child < (len - 1) / 2 {
        child = 2 * (child + 1);
        if less(&v[child], &v[child - 1]) {
            child -= 1;
        }
        v[hole] = v[child];
        hole = child;
    }
    if len & 1 == 0 && child == (len - 2) / 2 {
        child = 2 * (child + 1);
        v[hole] = v[child - 1];
        hole = child - 1;
    }
    // push_heap: move the value up towards `top`.
    while hole > top {
        let parent = (hole - 1) / 2;
        if !less(&v[parent], &value) {
            break;
        }
        v[hole] = v[parent];
        hole = parent;
    }
    v[hole] = value;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (key, original index) pairs sorted by key only.
    fn sorted(keys: &[u32]) -> Vec<(u32, usize)> {
        let mut v: Vec<(u32, usize)> = keys.iter().copied().zip(0..).collect();
        sort(&mut v, |a, b| a.0 < b.0);
        v
    }

    #[test]
    fn sorts() {
        let mut x = 12345u64;
        for n in [0, 1, 2, 5, 16, 17, 40, 1000] {
            let keys: Vec<u32> = (0..n)
                .map(|_| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (x >> 59) as u32
                })
                .collect();
            let v = sorted(&keys);
            assert!(v.windows(2).all(|w| w[0].0 <= w[1].0));
            let mut idx: Vec<usize> = v.iter().map(|p| p.1).collect();
            idx.sort_unstable();
            assert_eq!(idx, (0..n).collect::<Vec<_>>());
        }
    }

    #[test]
    fn heap_sort_sorts() {
        let mut v: Vec<u32> = (0..100).map(|i| (i * 37) % 17).collect();
        heap_sort(&mut v, &|a: &u32, b: &u32| a < b);
        assert!(v.windows(2).all(|w| w[0] <= w[1]));
    }

    /// Permutations printed by a C++ program running libstdc++ 12's
    /// `std::sort` on the same keys (ties are where the order is specific).
    #[test]
    fn matches_libstdcxx_on_ties() {
        let keys: Vec<u32> = (0..40).map(|i| (i * 7 % 5) as u32).collect();
        let order: Vec<usize> = sorted(&keys).iter().map(|p| p.1).collect();
        assert_eq!(order, LIBSTDCXX_40);
    }

    const LIBSTDCXX_40: [usize; 40] = [
        10, 20, 25, 15, 30, 35, 5, 0, 33, 8, 28, 13, 3, 38, 23, 18, 31, 1, 36, 26, 21, 6, 16, 11,
        39, 19, 4, 34, 9, 29, 14, 24, 12, 27, 32, 7, 17, 37, 2, 22,
    ];
}
