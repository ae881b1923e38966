//! The CPU backend's thread pool: persistent workers that spin between
//! operations.
//!
//! Decode runs a few hundred short parallel operations per token (tens of
//! microseconds each on a small model). A pool whose idle workers sleep
//! pays a futex wake-up and a scheduler round trip per operation, a third
//! of smollm2's decode time with rayon. Here idle workers spin on a
//! generation counter, so back-to-back operations start within a
//! cache-line transfer. Past some tens of microseconds they yield the CPU
//! between checks (other processes may need the core: several test
//! binaries at once, a server beside its clients), and past a couple of
//! milliseconds they park, so an idle process costs nothing.
//!
//! One operation at a time: [`Pool::for_each`] hands out task indices
//! through an atomic counter (the caller works too) and returns when every
//! task has finished. Operations do not nest.

use std::any::Any;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Checks an idle thread makes with only a pause between them (about
/// 50 µs), before yielding between checks.
const PURE_SPINS: u32 = 1 << 11;
/// How long an idle worker keeps checking before parking.
const SPIN: Duration = Duration::from_millis(2);

type Task = dyn Fn(usize) + Sync;

struct Shared {
    /// The current operation; written by the caller only while every
    /// worker is idle (between `done` reaching the worker count and the
    /// next `generation` bump).
    job: Mutex<Option<&'static Task>>,
    generation: AtomicU64,
    next: AtomicUsize,
    tasks: AtomicUsize,
    /// Workers finished with the current generation.
    done: AtomicUsize,
    stop: AtomicBool,
    parked: Mutex<usize>,
    wake: Condvar,
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

pub struct Pool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

impl Pool {
    /// A pool of `threads` threads in all, the caller's included.
    pub fn new(threads: usize) -> Pool {
        let shared = Arc::new(Shared {
            job: Mutex::new(None),
            generation: AtomicU64::new(0),
            next: AtomicUsize::new(0),
            tasks: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            parked: Mutex::new(0),
            wake: Condvar::new(),
            panic: Mutex::new(None),
        });
        let workers = (1..threads.max(1))
            .map(|i| {
                let shared = shared.clone();
                std::thread::Builder::new()
                    .name(format!("quarrel-cpu-{i}"))
                    .spawn(move || worker(&shared))
                    .expect("spawn a CPU worker thread")
            })
            .collect();
        Pool { shared, workers }
    }

    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Calls `f(i)` for every `i` in `0..n`, spread over the pool's
    /// threads; returns when all calls have returned.
    pub fn for_each(&self, n: usize, f: impl Fn(usize) + Sync) {
        if n <= 1 || self.workers.is_empty() {
            (0..n).for_each(f);
            return;
        }
        let s = &*self.shared;
        let f: &(dyn Fn(usize) + Sync + '_) = &f;
        // SAFETY: the reference is only used by workers during this call:
        // they take it after the generation bump below and report `done`
        // before this function returns, which is when `f` dies.
        let f: &'static Task =
            unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync + '_), &'static Task>(f) };
        *s.job.lock().expect("pool job") = Some(f);
        s.tasks.store(n, Ordering::Relaxed);
        s.next.store(0, Ordering::Relaxed);
        s.done.store(0, Ordering::Relaxed);
        s.generation.fetch_add(1, Ordering::Release);
        if *s.parked.lock().expect("pool parking") > 0 {
            s.wake.notify_all();
        }
        let mine = catch_unwind(AssertUnwindSafe(|| run_tasks(s, f)));
        let mut spins = 0u32;
        while s.done.load(Ordering::Acquire) < self.workers.len() {
            pause(&mut spins);
        }
        *s.job.lock().expect("pool job") = None;
        if let Err(p) = mine {
            resume_unwind(p);
        }
        if let Some(p) = s.panic.lock().expect("pool panic").take() {
            resume_unwind(p);
        }
    }

    /// Calls `f(i, chunk)` for each `chunk`-element piece of `data`
    /// (the last may be shorter), spread over the pool.
    pub fn for_each_chunk<T: Send>(
        &self,
        data: &mut [T],
        chunk: usize,
        f: impl Fn(usize, &mut [T]) + Sync,
    ) {
        let split = Split::new(data, chunk);
        self.for_each(split.count(), |i| {
            // SAFETY: each task index is handed out once per operation.
            f(i, unsafe { split.piece(i) })
        });
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.generation.fetch_add(1, Ordering::Release);
        {
            let _parked = self.shared.parked.lock().expect("pool parking");
            self.shared.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// One idle check's wait: a pause at first, then a yield to the scheduler.
fn pause(spins: &mut u32) {
    if *spins < PURE_SPINS {
        *spins += 1;
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

fn run_tasks(s: &Shared, f: &Task) {
    let n = s.tasks.load(Ordering::Relaxed);
    loop {
        let i = s.next.fetch_add(1, Ordering::Relaxed);
        if i >= n {
            return;
        }
        f(i);
    }
}

fn worker(s: &Shared) {
    let mut seen = 0;
    loop {
        seen = wait_for_work(s, seen);
        if s.stop.load(Ordering::Acquire) {
            return;
        }
        let job = *s.job.lock().expect("pool job");
        if let Some(f) = job {
            if let Err(p) = catch_unwind(AssertUnwindSafe(|| run_tasks(s, f))) {
                *s.panic.lock().expect("pool panic") = Some(p);
            }
        }
        s.done.fetch_add(1, Ordering::Release);
    }
}

/// Waits for a generation after `seen`: spinning first, then parked.
fn wait_for_work(s: &Shared, seen: u64) -> u64 {
    let start = Instant::now();
    let mut spins = 0u32;
    loop {
        let g = s.generation.load(Ordering::Acquire);
        if g != seen {
            return g;
        }
        pause(&mut spins);
        if spins >= PURE_SPINS && start.elapsed() > SPIN {
            break;
        }
    }
    let mut parked = s.parked.lock().expect("pool parking");
    *parked += 1;
    loop {
        let g = s.generation.load(Ordering::Acquire);
        if g != seen {
            *parked -= 1;
            return g;
        }
        parked = s.wake.wait(parked).expect("pool parking");
    }
}

/// A mutable slice cut into pieces that tasks borrow one each.
struct Split<T> {
    ptr: *mut T,
    len: usize,
    chunk: usize,
}

// SAFETY: tasks access disjoint pieces (see `piece`); T is Send.
unsafe impl<T: Send> Sync for Split<T> {}

impl<T> Split<T> {
    fn new(data: &mut [T], chunk: usize) -> Split<T> {
        assert!(chunk > 0, "pieces of at least one element");
        Split {
            ptr: data.as_mut_ptr(),
            len: data.len(),
            chunk,
        }
    }

    fn count(&self) -> usize {
        self.len.div_ceil(self.chunk)
    }

    /// Piece `i`.
    ///
    /// # Safety
    /// No two live borrows of the same piece, and not past the slice's
    /// borrow (both hold within one `for_each`).
    #[allow(clippy::mut_from_ref)]
    unsafe fn piece(&self, i: usize) -> &mut [T] {
        let start = i * self.chunk;
        let len = self.chunk.min(self.len - start);
        // SAFETY: start + len <= self.len, inside the original slice, and
        // the caller guarantees exclusive use of this piece.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), len) }
    }
}

/// A row-major f32 matrix whose columns tasks fill independently (each
/// column written by one task only): the output of a matmul whose tasks
/// own ranges of weight rows.
pub struct ColumnSplit<'a> {
    ptr: *mut f32,
    rows: usize,
    ld: usize,
    _borrow: std::marker::PhantomData<&'a mut [f32]>,
}

// SAFETY: tasks write disjoint columns (the contract of `at` / `set`), and
// the matrix stays borrowed mutably for the split's lifetime.
unsafe impl Sync for ColumnSplit<'_> {}

impl<'a> ColumnSplit<'a> {
    /// `data` as rows of `ld` floats.
    pub fn new(data: &'a mut [f32], ld: usize) -> Self {
        ColumnSplit {
            ptr: data.as_mut_ptr(),
            rows: data.len() / ld,
            ld,
            _borrow: std::marker::PhantomData,
        }
    }

    /// Columns `cols` of row `row`.
    ///
    /// # Safety
    /// No other task may access these columns while the slice lives.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn cols_mut(&self, row: usize, cols: std::ops::Range<usize>) -> &mut [f32] {
        assert!(
            row < self.rows && cols.start <= cols.end && cols.end <= self.ld,
            "row {row}, columns {cols:?} outside the matrix"
        );
        // SAFETY: in bounds, checked just above; the caller owns the columns.
        unsafe {
            std::slice::from_raw_parts_mut(self.ptr.add(row * self.ld + cols.start), cols.len())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_runs_once() {
        let pool = Pool::new(3);
        for n in [0, 1, 2, 7, 1000] {
            let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
            pool.for_each(n, |i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
        }
        let mut data = vec![0usize; 1003];
        pool.for_each_chunk(&mut data, 10, |i, c| c.iter_mut().for_each(|v| *v = i));
        assert!(data.iter().enumerate().all(|(j, &v)| v == j / 10));
    }

    #[test]
    fn workers_wake_after_parking() {
        let pool = Pool::new(2);
        std::thread::sleep(SPIN * 3);
        let sum = AtomicUsize::new(0);
        pool.for_each(100, |i| {
            sum.fetch_add(i, Ordering::Relaxed);
        });
        assert_eq!(sum.load(Ordering::Relaxed), 4950);
    }

    #[test]
    fn a_panicking_task_reaches_the_caller() {
        let pool = Pool::new(2);
        let r = catch_unwind(AssertUnwindSafe(|| {
            pool.for_each(64, |i| assert!(i != 40, "task 40"));
        }));
        assert!(r.is_err());
        // The pool still works afterwards.
        let sum = AtomicUsize::new(0);
        pool.for_each(10, |i| {
            sum.fetch_add(i, Ordering::Relaxed);
        });
        assert_eq!(sum.load(Ordering::Relaxed), 45);
    }
}
