//! The decode loop allocates nothing: after the first step has grown every
//! buffer to its decode size, forward passes, attention over a growing
//! cache (past the 512-position split) and sampling reuse what they have.
//! A counting global allocator checks it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use quarrel_cpu::CpuBackend;
use quarrel_gguf::{GgmlType, GgufFile};
use quarrel_model::synth::{self, SynthType};
use quarrel_model::{Model, Sampler, SamplerConfig, Session};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

fn count() {
    if COUNTING.load(Ordering::Relaxed) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: forwards every call to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by 40 sampled decode steps after a 500-token prompt.
fn decode_allocations(preset: &str, ty: SynthType, cfg: SamplerConfig) -> usize {
    let spec = synth::preset(preset).expect("preset");
    let mut bytes = Vec::new();
    synth::write(&spec, ty, 1, &mut bytes).expect("write a synthetic model");
    let file = GgufFile::from_bytes(bytes, preset).expect("parse it back");
    let model = Model::load(&file, CpuBackend::new(2)).expect("load");
    let n_vocab = model.config.n_vocab;
    let mut session = Session::new(&model, 640, 64);
    let mut logits = Vec::new();
    let prompt: Vec<u32> = (0..500)
        .map(|i| (3 + (i * 7919) % (n_vocab - 3)) as u32)
        .collect();
    session
        .eval(&prompt, false, &mut logits, None)
        .expect("prompt");
    let mut sampler = Sampler::new(cfg, n_vocab);
    prompt.iter().for_each(|&t| sampler.accept(t));
    let mut step = |session: &mut Session<'_, CpuBackend>, logits: &mut Vec<f32>| {
        let token = sampler.sample(logits);
        sampler.accept(token);
        session.eval(&[token], false, logits, None).expect("decode");
    };
    step(&mut session, &mut logits);
    ALLOCATIONS.store(0, Ordering::Relaxed);
    COUNTING.store(true, Ordering::Relaxed);
    for _ in 0..40 {
        step(&mut session, &mut logits);
    }
    COUNTING.store(false, Ordering::Relaxed);
    assert!(
        session.n_past() > 512,
        "the steps crossed the split-KV length"
    );
    ALLOCATIONS.load(Ordering::Relaxed)
}

#[test]
fn decode_steps_do_not_allocate() {
    for (preset, ty) in [
        ("tiny-llama", SynthType::Q4KM),
        ("tiny-gemma3", SynthType::Uniform(GgmlType::Q8_0)),
        ("tiny-qwen2", SynthType::Uniform(GgmlType::Q4_1)),
    ] {
        // The candidate list (penalties, cuts), and the uncut draw.
        let penalised = SamplerConfig {
            repeat_penalty: 1.1,
            ..SamplerConfig::default()
        };
        let uncut = SamplerConfig {
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            ..SamplerConfig::default()
        };
        for cfg in [penalised, uncut] {
            let n = decode_allocations(preset, ty, cfg);
            assert_eq!(n, 0, "{preset}: {n} allocations in 40 decode steps");
        }
    }
}
