//! `spire::Engine` as a service embeds it: requests from many threads batched by the scheduler,
//! each with the tokens it gets alone; cancellation, deadlines, a full queue, progress events
//! and previews; no KV block left held afterwards.

use std::time::Duration;

use spire::decode::speculative::config::{DrafterChoice, RuleConfig, SpecConfig};
use spire::engine::BackendEngine;
use spire::{Engine, Error, GenerationHandle, Progress, Request};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/weights/demo");

/// The public face is shareable: an engine across threads, a handle and its futures into tasks.
#[test]
fn the_engine_and_its_handles_cross_threads() {
    fn send_sync<T: Send + Sync + Clone>() {}
    fn send<T: Send>(_: &T) {}
    send_sync::<Engine>();
    fn handle_is_send(handle: GenerationHandle) {
        send(&handle.result());
    }
    let _ = handle_is_send;
}

/// Request `i` of the mix: plain AR, a draft-model chain (vanilla), a draft-head tree (COOL-SD).
fn request(i: u64) -> Request {
    let mut request = Request::new((i % 10) as u32, 100 + i);
    request.sampling.cfg_scale = 2.0;
    request.speculative = match i % 3 {
        0 => None,
        1 => Some(SpecConfig::chain(RuleConfig::Vanilla, DrafterChoice::Model, 4)),
        _ => Some(SpecConfig { rule: RuleConfig::Cool { delta: 1.5, nu: 0.7, mu: 0.0, schedule: spire::CoolSchedule::Floored }, drafter: DrafterChoice::Head, widths: vec![2, 2, 1] }),
    };
    request
}

#[test]
fn concurrent_requests_get_their_serial_tokens_and_free_every_block() {
    let engine = Engine::builder(DIR).max_batch(6).build().unwrap();
    let serial = BackendEngine::load(DIR).unwrap();
    let threads: Vec<_> = (0..12u64)
        .map(|i| {
            let engine = engine.clone();
            std::thread::spawn(move || engine.submit(request(i)).unwrap().wait().unwrap())
        })
        .collect();
    for (i, thread) in threads.into_iter().enumerate() {
        let got = thread.join().unwrap();
        let want = serial.generate_tokens(&request(i as u64), &mut |_, _| {}).unwrap();
        assert_eq!(got.tokens, want.tokens, "request {i}");
        assert_eq!(got.stats.target_forwards, want.stats.target_forwards, "request {i}");
        assert_eq!(got.image, serial.decode(&want.tokens).unwrap(), "request {i}: the image");
    }
    let stats = engine.stats();
    assert_eq!((stats.completed, stats.in_flight, stats.queued, stats.kv_blocks_in_use), (12, 0, 0, 0), "{stats:?}");
    let text = engine.metrics_text().unwrap();
    for metric in ["spire_requests_total{outcome=\"completed\"} 12", "spire_queue_depth 0", "spire_tokens_per_target_forward", "spire_acceptance_rate", "spire_images_per_second"] {
        assert!(text.contains(metric), "metrics lack `{metric}`:\n{text}");
    }
}

#[test]
fn cancelled_and_late_requests_stop_and_give_their_blocks_back() {
    let engine = Engine::builder(DIR).max_batch(4).build().unwrap();
    let keep = engine.submit(request(1)).unwrap();
    let cancelled = engine.submit(request(2)).unwrap();
    let dropped = engine.submit(request(4)).unwrap();
    let late = engine.submit(Request { deadline: Some(Duration::from_millis(1)), ..request(3) }).unwrap();
    cancelled.cancel();
    drop(dropped);
    assert!(matches!(cancelled.wait(), Err(Error::Cancelled(_))));
    assert!(matches!(late.wait(), Err(Error::DeadlineExceeded { .. })));
    assert_eq!(keep.wait().unwrap().tokens.len(), 64);
    let stats = engine.stats();
    assert_eq!((stats.completed, stats.cancelled, stats.deadline_exceeded), (1, 2, 1), "{stats:?}");
    assert_eq!((stats.in_flight, stats.kv_blocks_in_use), (0, 0), "{stats:?}");
}

#[test]
fn a_full_queue_answers_busy_and_bad_requests_are_refused_at_once() {
    let engine = Engine::builder(DIR).max_batch(1).queue_capacity(2).build().unwrap();
    let handles: Vec<_> = (0..6).map(|i| engine.submit(request(3 * i))).collect();
    let busy = handles.iter().filter(|h| matches!(h, Err(Error::Busy { .. }))).count();
    assert!(busy >= 3, "{busy} of 6 submissions were refused with a queue of 2 behind a batch of 1");
    assert!(handles.iter().filter_map(|h| h.as_ref().err()).all(Error::is_retryable));
    let err = engine.submit(Request::new(77, 0)).unwrap_err();
    assert!(matches!(&err, Error::InvalidRequest(m) if m.contains("class id 77")), "{err}");
    for handle in handles.into_iter().flatten() {
        handle.wait().unwrap();
    }
}

#[test]
fn progress_events_stream_tokens_and_previews() {
    let engine = Engine::load(DIR).unwrap();
    let mut handle = engine.submit(Request { preview_every: 16, ..request(2) }).unwrap();
    let (mut tokens, mut previews) = (Vec::new(), 0);
    while let Some(event) = handle.blocking_progress() {
        match event {
            Progress::Tokens { new, done, total } => {
                tokens.extend(new);
                assert_eq!((tokens.len(), total), (done, 64));
            }
            Progress::Preview(image) => {
                previews += 1;
                assert!(image.width > 0);
            }
        }
    }
    assert_eq!(previews, 4, "a preview every 16 of 64 tokens");
    assert_eq!(handle.wait().unwrap().tokens, tokens);
}
