//! The engine on a synthetic model: batched requests give the tokens they
//! give alone; preemption, cancellation and the prefix cache keep them.

use std::sync::Arc;

use quarrel_cpu::CpuBackend;
use quarrel_engine::{
    EngineConfig, EngineHandle, Event, FinishReason, GenParams, Metrics, Request,
};
use quarrel_gguf::GgufFile;
use quarrel_model::synth::{self, SynthType};
use quarrel_model::{Model, SamplerConfig};
use quarrel_tokenizer::Tokenizer;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

fn engine(kv_blocks: usize) -> EngineHandle {
    let spec = synth::preset("tiny-qwen2").expect("preset");
    let mut bytes = Vec::new();
    synth::write(&spec, SynthType::Q4KM, 3, &mut bytes).expect("write a synthetic model");
    let file = GgufFile::from_bytes(bytes, "tiny-qwen2").expect("parse it back");
    let model = Model::load(&file, CpuBackend::new(2)).expect("load");
    let tokenizer = Arc::new(Tokenizer::from_gguf(file.metadata()).expect("tokenizer"));
    let cfg = EngineConfig {
        n_ctx: 512,
        kv_blocks,
        block_size: 16,
        max_seqs: 16,
        max_batch_tokens: 96,
        prefill_chunk: 48,
        max_queue: 64,
    };
    EngineHandle::start(model, tokenizer, cfg, Arc::new(Metrics::default()))
}

/// Distinct prompts of 5 to 80 tokens: some fit one chunk, some take two,
/// some are long enough for the prompt kernels.
fn prompts(n: usize) -> Vec<Vec<u32>> {
    (0..n)
        .map(|i| {
            let len = 5 + (i * 37) % 76;
            (0..len)
                .map(|j| (3 + (i * 131 + j * 17) % 250) as u32)
                .collect()
        })
        .collect()
}

fn submit(e: &EngineHandle, prompt: &[u32], max_tokens: usize) -> UnboundedReceiver<Event> {
    let (tx, rx) = unbounded_channel();
    let params = GenParams {
        max_tokens,
        sampler: SamplerConfig::greedy(),
        stop: Vec::new(),
        logprobs: None,
        ignore_eos: true,
    };
    e.submit(Request {
        prompt: prompt.to_vec(),
        params,
        events: tx,
    })
    .expect("accepted");
    rx
}

/// The generated tokens, how the request finished and its cached tokens.
fn collect(mut rx: UnboundedReceiver<Event>) -> (Vec<u32>, FinishReason, usize) {
    let mut tokens = Vec::new();
    loop {
        match rx.blocking_recv().expect("the engine answers") {
            Event::Token { id, .. } => tokens.push(id),
            Event::Text(_) => {}
            Event::Done(f) => {
                assert_eq!(f.completion_tokens, tokens.len());
                return (tokens, f.reason, f.cached_tokens);
            }
            Event::Failed(e) => panic!("engine failed: {e}"),
        }
    }
}

fn one_at_a_time(prompts: &[Vec<u32>], max_tokens: usize) -> Vec<Vec<u32>> {
    let e = engine(256);
    let out = prompts
        .iter()
        .map(|p| collect(submit(&e, p, max_tokens)).0)
        .collect();
    e.shutdown();
    out
}

fn preemptions(e: &EngineHandle) -> u64 {
    e.metrics()
        .preemptions
        .load(std::sync::atomic::Ordering::Relaxed)
}

#[test]
fn sixteen_concurrent_requests_give_the_tokens_they_give_alone() {
    let prompts = prompts(16);
    let alone = one_at_a_time(&prompts, 24);
    let e = engine(256);
    let rxs: Vec<_> = prompts.iter().map(|p| submit(&e, p, 24)).collect();
    for (i, rx) in rxs.into_iter().enumerate() {
        let (tokens, reason, _) = collect(rx);
        assert_eq!(reason, FinishReason::Length);
        assert_eq!(tokens, alone[i], "request {i} batched vs alone");
    }
    assert_eq!(preemptions(&e), 0);
    e.shutdown();
}

#[test]
fn preempted_requests_complete_with_the_same_tokens() {
    let prompts = prompts(8);
    let alone = one_at_a_time(&prompts, 40);
    // 12 blocks of 16: room for two or three of these sequences at a time.
    let e = engine(12);
    let rxs: Vec<_> = prompts.iter().map(|p| submit(&e, p, 40)).collect();
    for (i, rx) in rxs.into_iter().enumerate() {
        assert_eq!(collect(rx).0, alone[i], "request {i} under preemption");
    }
    assert!(preemptions(&e) > 0, "the budget forced preemptions");
    e.shutdown();
}

#[test]
fn a_dropped_request_frees_its_blocks() {
    use std::sync::atomic::Ordering::Relaxed;
    let e = engine(64);
    let mut rx = submit(&e, &prompts(3)[2], 400);
    // Wait until it is generating, then hang up.
    assert!(matches!(rx.blocking_recv(), Some(Event::Token { .. })));
    assert!(e.metrics().kv_blocks_used.load(Relaxed) > 0);
    drop(rx);
    let t0 = std::time::Instant::now();
    while e.metrics().kv_blocks_used.load(Relaxed) > 0 {
        assert!(t0.elapsed().as_secs() < 10, "blocks still held");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(e.metrics().running.load(Relaxed), 0);
    e.shutdown();
}

#[test]
fn a_repeated_prompt_reuses_its_cached_blocks() {
    let prompt = &prompts(3)[2]; // 79 tokens: four full blocks
    let e = engine(64);
    let (first, _, cached) = collect(submit(&e, prompt, 8));
    assert_eq!(cached, 0);
    let (again, _, cached) = collect(submit(&e, prompt, 8));
    assert_eq!(cached, 64);
    assert_eq!(again, first);
    e.shutdown();
}

#[test]
fn bad_requests_are_refused() {
    let e = engine(8);
    let (tx, _rx) = unbounded_channel();
    let req = |prompt: Vec<u32>| Request {
        prompt,
        params: GenParams {
            max_tokens: 1,
            sampler: SamplerConfig::greedy(),
            stop: Vec::new(),
            logprobs: None,
            ignore_eos: false,
        },
        events: tx.clone(),
    };
    use quarrel_engine::SubmitError;
    assert_eq!(e.submit(req(vec![])), Err(SubmitError::EmptyPrompt));
    // 8 blocks of 16 hold 128 positions.
    assert_eq!(
        e.submit(req(vec![5; 128])),
        Err(SubmitError::PromptTooLong {
            tokens: 128,
            max: 128
        })
    );
    e.shutdown();
    assert_eq!(e.submit(req(vec![5; 4])), Err(SubmitError::Stopped));
}
