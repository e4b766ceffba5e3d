//! What an [`crate::Engine`] has done, as Prometheus metrics (`Engine::metrics_text`, served at
//! `GET /metrics` by the HTTP service) and as a plain snapshot (`Engine::stats`).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus::{Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

use crate::decode::GenerationStats;
use crate::error::{Error, Result};

/// The window of the images-per-second gauge.
const RATE_WINDOW: Duration = Duration::from_secs(60);

/// How a request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Its image was delivered.
    Completed,
    /// It failed (bad settings found late, non-finite logits, a device error).
    Failed,
    /// The caller cancelled or dropped it, or the engine shut down.
    Cancelled,
    /// Its deadline passed.
    DeadlineExceeded,
    /// The queue was full when it was submitted.
    Rejected,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Failed => "failed",
            Outcome::Cancelled => "cancelled",
            Outcome::DeadlineExceeded => "deadline_exceeded",
            Outcome::Rejected => "rejected",
        }
    }

    /// Every outcome, for the snapshot.
    const ALL: [Outcome; 5] = [Outcome::Completed, Outcome::Failed, Outcome::Cancelled, Outcome::DeadlineExceeded, Outcome::Rejected];
}

/// A snapshot of an engine's counters and gauges.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Requests waiting for a batch.
    pub queued: usize,
    /// Images being decoded.
    pub in_flight: usize,
    /// KV blocks held by images in flight (0 when idle: nothing leaks).
    pub kv_blocks_in_use: usize,
    /// Requests by outcome: completed, failed, cancelled, deadline exceeded, rejected.
    pub completed: u64,
    /// See `completed`.
    pub failed: u64,
    /// See `completed`.
    pub cancelled: u64,
    /// See `completed`.
    pub deadline_exceeded: u64,
    /// See `completed`.
    pub rejected: u64,
}

/// The metrics of one engine (its own registry).
pub(super) struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    pub(super) queue_depth: IntGauge,
    pub(super) in_flight: IntGauge,
    pub(super) kv_blocks_in_use: IntGauge,
    tokens: IntCounter,
    target_forwards: IntCounter,
    drafted: IntCounter,
    accepted: IntCounter,
    steps: IntCounter,
    step_seconds: Histogram,
    request_seconds: Histogram,
    images_per_second: Gauge,
    tokens_per_forward: Gauge,
    acceptance: Gauge,
    recent: Mutex<VecDeque<Instant>>,
}

fn registered<M: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: prometheus::Result<M>) -> Result<M> {
    let metric = metric.map_err(|e| Error::Internal(format!("metrics: {e}")))?;
    registry.register(Box::new(metric.clone())).map_err(|e| Error::Internal(format!("metrics: {e}")))?;
    Ok(metric)
}

impl Metrics {
    /// Fresh metrics in a registry of their own.
    pub(super) fn new() -> Result<Self> {
        let r = Registry::new();
        let seconds = |name: &str, help: &str, buckets: Vec<f64>| Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets));
        Ok(Self {
            requests: registered(&r, IntCounterVec::new(Opts::new("spire_requests_total", "Requests by outcome."), &["outcome"]))?,
            queue_depth: registered(&r, IntGauge::new("spire_queue_depth", "Requests waiting for a batch."))?,
            in_flight: registered(&r, IntGauge::new("spire_images_in_flight", "Images being decoded."))?,
            kv_blocks_in_use: registered(&r, IntGauge::new("spire_kv_blocks_in_use", "KV cache blocks held by images in flight."))?,
            tokens: registered(&r, IntCounter::new("spire_tokens_total", "Image tokens of completed images."))?,
            target_forwards: registered(&r, IntCounter::new("spire_target_forwards_total", "Target forward passes of completed images (per image)."))?,
            drafted: registered(&r, IntCounter::new("spire_drafted_tokens_total", "Draft tokens proposed for completed images."))?,
            accepted: registered(&r, IntCounter::new("spire_accepted_tokens_total", "Draft tokens accepted for completed images."))?,
            steps: registered(&r, IntCounter::new("spire_steps_total", "Decoding steps (one forward for a whole batch)."))?,
            step_seconds: registered(&r, seconds("spire_step_seconds", "Wall time of a decoding step.", prometheus::exponential_buckets(1e-4, 2.0, 16).unwrap_or_default()))?,
            request_seconds: registered(&r, seconds("spire_request_seconds", "Time from submission to the finished image.", prometheus::exponential_buckets(1e-2, 2.0, 14).unwrap_or_default()))?,
            images_per_second: registered(&r, Gauge::new("spire_images_per_second", "Images completed per second over the last minute."))?,
            tokens_per_forward: registered(&r, Gauge::new("spire_tokens_per_target_forward", "Image tokens per target forward, over completed images."))?,
            acceptance: registered(&r, Gauge::new("spire_acceptance_rate", "Accepted over drafted tokens, over completed images."))?,
            recent: Mutex::new(VecDeque::new()),
            registry: r,
        })
    }

    /// Count a request that ended with `outcome`.
    pub(super) fn outcome(&self, outcome: Outcome) {
        self.requests.with_label_values(&[outcome.label()]).inc();
    }

    /// Count a completed image.
    pub(super) fn completed(&self, stats: &GenerationStats, latency: Duration) {
        self.outcome(Outcome::Completed);
        self.tokens.inc_by(stats.tokens as u64);
        self.target_forwards.inc_by(stats.target_forwards as u64);
        self.drafted.inc_by(stats.drafted as u64);
        self.accepted.inc_by(stats.accepted as u64);
        self.request_seconds.observe(latency.as_secs_f64());
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent.push_back(Instant::now());
    }

    /// Count a decoding step that took `time`.
    pub(super) fn step(&self, time: Duration) {
        self.steps.inc();
        self.step_seconds.observe(time.as_secs_f64());
    }

    /// Update the derived gauges.
    fn refresh(&self) {
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        while recent.front().is_some_and(|t| t.elapsed() > RATE_WINDOW) {
            recent.pop_front();
        }
        self.images_per_second.set(recent.len() as f64 / RATE_WINDOW.as_secs_f64());
        self.tokens_per_forward.set(self.tokens.get() as f64 / self.target_forwards.get().max(1) as f64);
        self.acceptance.set(self.accepted.get() as f64 / self.drafted.get().max(1) as f64);
    }

    /// Every metric in the Prometheus text exposition format.
    pub(super) fn text(&self) -> Result<String> {
        self.refresh();
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out).map_err(|e| Error::Internal(format!("metrics: {e}")))?;
        String::from_utf8(out).map_err(|e| Error::Internal(format!("metrics: {e}")))
    }

    /// The counters and gauges as plain numbers.
    pub(super) fn snapshot(&self) -> EngineStats {
        let [completed, failed, cancelled, deadline_exceeded, rejected] = Outcome::ALL.map(|o| self.requests.with_label_values(&[o.label()]).get());
        let gauge = |g: &IntGauge| g.get().max(0) as usize;
        EngineStats {
            queued: gauge(&self.queue_depth),
            in_flight: gauge(&self.in_flight),
            kv_blocks_in_use: gauge(&self.kv_blocks_in_use),
            completed,
            failed,
            cancelled,
            deadline_exceeded,
            rejected,
        }
    }
}
