//! Counters the engine and the server update, in Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

/// A latency histogram with fixed bucket bounds (seconds).
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_us: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_us: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        if let Some(i) = self.bounds.iter().position(|&b| s <= b) {
            self.counts[i].fetch_add(1, Relaxed);
        }
        self.sum_us.fetch_add(d.as_micros() as u64, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cum = 0;
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            cum += c.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cum}");
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_us.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

const TTFT_BOUNDS: &[f64] = &[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
const ITL_BOUNDS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5];

pub struct Metrics {
    requests: Mutex<BTreeMap<u16, u64>>,
    pub prompt_tokens: AtomicU64,
    pub generated_tokens: AtomicU64,
    pub cached_prompt_tokens: AtomicU64,
    pub preemptions: AtomicU64,
    pub running: AtomicU64,
    pub waiting: AtomicU64,
    pub kv_blocks_used: AtomicU64,
    pub kv_blocks_free: AtomicU64,
    pub kv_blocks_cached: AtomicU64,
    pub ttft: Histogram,
    pub itl: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Mutex::new(BTreeMap::new()),
            prompt_tokens: AtomicU64::new(0),
            generated_tokens: AtomicU64::new(0),
            cached_prompt_tokens: AtomicU64::new(0),
            preemptions: AtomicU64::new(0),
            running: AtomicU64::new(0),
            waiting: AtomicU64::new(0),
            kv_blocks_used: AtomicU64::new(0),
            kv_blocks_free: AtomicU64::new(0),
            kv_blocks_cached: AtomicU64::new(0),
            ttft: Histogram::new(TTFT_BOUNDS),
            itl: Histogram::new(ITL_BOUNDS),
        }
    }
}

impl Metrics {
    /// Counts a finished HTTP request by its status code.
    pub fn count_request(&self, status: u16) {
        *self
            .requests
            .lock()
            .expect("metrics lock")
            .entry(status)
            .or_default() += 1;
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP quarrel_requests_total HTTP requests by status code.\n# TYPE quarrel_requests_total counter"
        );
        for (status, n) in self.requests.lock().expect("metrics lock").iter() {
            let _ = writeln!(out, "quarrel_requests_total{{status=\"{status}\"}} {n}");
        }
        let (counter, gauge) = ("counter", "gauge");
        let values = [
            (
                "quarrel_prompt_tokens_total",
                counter,
                "Prompt tokens of admitted requests.",
                &self.prompt_tokens,
            ),
            (
                "quarrel_generation_tokens_total",
                counter,
                "Tokens generated.",
                &self.generated_tokens,
            ),
            (
                "quarrel_prefix_cache_hit_tokens_total",
                counter,
                "Prompt tokens found in the prefix cache.",
                &self.cached_prompt_tokens,
            ),
            (
                "quarrel_preemptions_total",
                counter,
                "Sequences preempted for want of KV blocks.",
                &self.preemptions,
            ),
            (
                "quarrel_running_sequences",
                gauge,
                "Sequences being evaluated.",
                &self.running,
            ),
            (
                "quarrel_waiting_sequences",
                gauge,
                "Sequences waiting to start (or to resume).",
                &self.waiting,
            ),
            (
                "quarrel_kv_blocks_used",
                gauge,
                "KV-cache blocks held by sequences.",
                &self.kv_blocks_used,
            ),
            (
                "quarrel_kv_blocks_free",
                gauge,
                "KV-cache blocks free to allocate (cached ones included).",
                &self.kv_blocks_free,
            ),
            (
                "quarrel_kv_blocks_cached",
                gauge,
                "Free KV-cache blocks that still hold a cached prefix.",
                &self.kv_blocks_cached,
            ),
        ];
        for (name, kind, help, v) in values {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
                v.load(Relaxed)
            );
        }
        self.ttft.render(
            &mut out,
            "quarrel_time_to_first_token_seconds",
            "Time from arrival to the first generated token.",
        );
        self.itl.render(
            &mut out,
            "quarrel_inter_token_latency_seconds",
            "Time between consecutive generated tokens of a sequence.",
        );
        out
    }
}
