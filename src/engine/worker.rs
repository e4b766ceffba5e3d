//! The scheduler thread behind an [`crate::Engine`]: continuous batching. Requests wait in a
//! queue; between decoding steps they join a batch of requests with the same sampling and
//! speculative settings (one batch per setting, at most `max_batch` images in flight in all,
//! each admitted only if the KV pool can hold it at its largest), every batch advances by one
//! step in turn, and finished, failed, cancelled or late requests leave with their KV blocks
//! freed. An image's tokens depend only on its own request, so it is the same alone or batched.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::Instant;

use super::backend_engine::BackendEngine;
use super::handle::{Generated, Progress, Reply};
use super::metrics::{Metrics, Outcome};
use super::request::Request;
use crate::backend::Backend;
use crate::decode::{Batch, BatchEvent, ImageId, ImageRequest, ImageTokens};
use crate::error::{Error, Result};

/// A submitted request, as the scheduler holds it.
pub(super) struct Job {
    pub(super) request: Request,
    pub(super) submitted: Instant,
    pub(super) reply: Reply,
    pub(super) span: tracing::Span,
    /// Tokens committed so far.
    tokens: Vec<u32>,
}

impl Job {
    /// A job for `request`, reporting to `reply`.
    pub(super) fn new(request: Request, reply: Reply) -> Self {
        let span = tracing::info_span!("request", class = request.class_id, seed = request.seed, speculative = request.speculative.is_some());
        Self { request, submitted: Instant::now(), reply, span, tokens: Vec::new() }
    }

    /// Why the job must stop now, if it must: cancelled, or past its deadline.
    fn stopped(&self) -> Option<(Outcome, Error)> {
        if self.reply.is_cancelled() {
            return Some((Outcome::Cancelled, Error::Cancelled("the request's handle was cancelled or dropped".into())));
        }
        let deadline = self.request.deadline?;
        let elapsed = self.submitted.elapsed();
        (elapsed > deadline).then_some((Outcome::DeadlineExceeded, Error::DeadlineExceeded { elapsed_ms: elapsed.as_millis(), deadline_ms: deadline.as_millis() }))
    }

    /// The job's image request inside a batch.
    fn image(&self) -> ImageRequest {
        ImageRequest { class: self.request.class_id, seed: self.request.seed }
    }

    /// Whether `other` can share this job's batch (same sampling and speculative settings).
    fn same_settings(&self, other: &Request) -> bool {
        self.request.sampling == other.sampling && self.request.speculative == other.speculative
    }
}

/// A batch and the jobs decoding in it.
struct Group<'e, B: Backend> {
    /// A job with the group's settings (the first one admitted).
    settings: Request,
    batch: Batch<'e, B>,
    jobs: HashMap<ImageId, Job>,
}

/// The scheduler's state.
struct Scheduler<'e, B: Backend> {
    engine: &'e BackendEngine<B>,
    metrics: &'e Metrics,
    /// Jobs submitted but not admitted (shared with the engine handle, which refuses new jobs
    /// when it reaches the queue's capacity).
    queued: &'e AtomicUsize,
    waiting: VecDeque<Job>,
    groups: Vec<Group<'e, B>>,
    max_batch: usize,
}

/// Run the scheduler until every [`crate::Engine`] handle is gone, then cancel what is left.
pub(super) fn run<B: Backend>(engine: BackendEngine<B>, jobs: Receiver<Job>, metrics: Arc<Metrics>, queued: Arc<AtomicUsize>, max_batch: usize) {
    let mut scheduler = Scheduler { engine: &engine, metrics: &metrics, queued: &queued, waiting: VecDeque::new(), groups: Vec::new(), max_batch };
    loop {
        if scheduler.waiting.is_empty() && scheduler.groups.is_empty() {
            match jobs.recv() {
                Ok(job) => scheduler.waiting.push_back(job),
                Err(_) => break,
            }
        }
        scheduler.waiting.extend(jobs.try_iter());
        scheduler.admit();
        scheduler.step_all();
    }
    scheduler.shut_down();
}

impl<'e, B: Backend> Scheduler<'e, B> {
    /// End `job` with `result`, counting its outcome.
    fn finish(&self, job: Job, outcome: Outcome, result: Result<Generated>) {
        match &result {
            Ok(generated) => self.metrics.completed(&generated.stats, job.submitted.elapsed()),
            Err(_) => self.metrics.outcome(outcome),
        }
        job.span.in_scope(|| tracing::info!(outcome = ?outcome, "request finished"));
        job.reply.finish(result);
    }

    /// Images in flight over every batch.
    fn in_flight(&self) -> usize {
        self.groups.iter().map(|g| g.batch.len()).sum()
    }

    /// Move waiting jobs into batches while there is room, dropping the ones that stopped.
    fn admit(&mut self) {
        let mut left = VecDeque::new();
        while let Some(job) = self.waiting.pop_front() {
            if let Some((outcome, error)) = job.stopped() {
                self.queued.fetch_sub(1, Ordering::Relaxed);
                self.finish(job, outcome, Err(error));
                continue;
            }
            match self.place(job) {
                None => {
                    self.queued.fetch_sub(1, Ordering::Relaxed);
                }
                Some(job) => left.push_back(job),
            }
        }
        self.waiting = left;
        self.metrics.queue_depth.set(self.waiting.len() as i64);
    }

    /// Admit `job` into the batch of its settings (opening one if there is none and room for
    /// another image); gives it back when there is no room now.
    fn place(&mut self, job: Job) -> Option<Job> {
        if self.in_flight() >= self.max_batch {
            return Some(job);
        }
        let index = match self.groups.iter().position(|g| job.same_settings(&g.settings)) {
            Some(i) => i,
            None => match self.engine.new_batch(&job.request, self.max_batch) {
                Ok(batch) => {
                    self.groups.push(Group { settings: job.request.clone(), batch, jobs: HashMap::new() });
                    self.groups.len() - 1
                }
                Err(e) => {
                    self.finish(job, Outcome::Failed, Err(e));
                    return None;
                }
            },
        };
        let group = &mut self.groups[index];
        if !group.batch.can_admit() {
            return Some(job);
        }
        match group.batch.admit(job.image()) {
            Ok(id) => {
                job.span.in_scope(|| tracing::debug!(image = id, batch = group.batch.len(), "admitted"));
                group.jobs.insert(id, job);
            }
            Err(e) => self.finish(job, Outcome::Failed, Err(e)),
        }
        None
    }

    /// One step of every batch, in turn; empty batches give their caches back.
    fn step_all(&mut self) {
        for g in 0..self.groups.len() {
            self.drop_stopped(g);
            if !self.groups[g].batch.is_empty() {
                self.step(g);
            }
        }
        let mut g = 0;
        while g < self.groups.len() {
            if self.groups[g].batch.is_empty() {
                let group = self.groups.swap_remove(g);
                if let Err(e) = self.engine.recycle(group.batch) {
                    tracing::error!(error = %e, "recycling a batch");
                }
            } else {
                g += 1;
            }
        }
        self.update_gauges();
    }

    /// The in-flight and KV gauges, as the batches stand now.
    fn update_gauges(&self) {
        self.metrics.in_flight.set(self.in_flight() as i64);
        self.metrics.kv_blocks_in_use.set(self.groups.iter().map(|g| g.batch.blocks_in_use()).sum::<usize>() as i64);
    }

    /// Cancel the images of group `g` whose jobs stopped (cancelled, or late).
    fn drop_stopped(&mut self, g: usize) {
        let stopped: Vec<(ImageId, Outcome, Error)> =
            self.groups[g].jobs.iter().filter_map(|(&id, job)| job.stopped().map(|(outcome, error)| (id, outcome, error))).collect();
        for (id, outcome, error) in stopped {
            let group = &mut self.groups[g];
            if let Err(e) = group.batch.cancel(id) {
                tracing::error!(error = %e, "cancelling an image");
            }
            if let Some(job) = group.jobs.remove(&id) {
                self.update_gauges();
                self.finish(job, outcome, Err(error));
            }
        }
    }

    /// One decoding step of group `g`; a step that fails fails every job of the group.
    fn step(&mut self, g: usize) {
        let start = Instant::now();
        let images = self.groups[g].batch.len();
        let span = tracing::debug_span!("step", images);
        let result = span.in_scope(|| self.groups[g].batch.step());
        self.metrics.step(start.elapsed());
        // Finished images have left the batch: the gauges say so before their callers hear.
        self.update_gauges();
        match result {
            Ok(events) => events.into_iter().for_each(|event| self.deliver(g, event)),
            Err(e) => {
                tracing::error!(error = %e, "a decoding step failed");
                let jobs: Vec<Job> = self.groups[g].jobs.drain().map(|(_, job)| job).collect();
                for job in jobs {
                    self.finish(job, Outcome::Failed, Err(e.replicate()));
                }
                let settings = self.groups[g].settings.clone();
                // The batch's state is unknown after a failed step: start the group afresh.
                if let Ok(fresh) = self.engine.new_batch(&settings, self.max_batch) {
                    let old = std::mem::replace(&mut self.groups[g].batch, fresh);
                    drop(old.into_parts());
                }
            }
        }
    }

    /// Hand one batch event of group `g` to its job.
    fn deliver(&mut self, g: usize, event: BatchEvent) {
        let total = self.engine.config().gpt.block_size;
        match event {
            BatchEvent::Progress { id, tokens, done } => {
                let Some(job) = self.groups[g].jobs.get_mut(&id) else { return };
                job.span.in_scope(|| tracing::debug!(accepted = tokens.len().saturating_sub(1), done, "step"));
                let before = job.tokens.len();
                job.tokens.extend_from_slice(&tokens);
                job.reply.progress(Progress::Tokens { new: tokens, done, total });
                let every = job.request.preview_every;
                if every > 0 && done / every > before / every {
                    let mut partial = job.tokens.clone();
                    partial.resize(total, 0);
                    if let Ok(image) = self.engine.decode(&partial) {
                        job.reply.progress(Progress::Preview(image));
                    }
                }
            }
            BatchEvent::Finished { id, result } => {
                let Some(job) = self.groups[g].jobs.remove(&id) else { return };
                let result = result.and_then(|ImageTokens { tokens, mut stats }| {
                    stats.elapsed = job.submitted.elapsed();
                    Ok(Generated { image: self.engine.decode(&tokens)?, tokens, stats })
                });
                self.finish(job, Outcome::Failed, result);
            }
        }
    }

    /// Cancel everything left (the engine is gone).
    fn shut_down(mut self) {
        let stopped = || Err(Error::Cancelled("the engine shut down before the request finished".into()));
        while let Some(job) = self.waiting.pop_front() {
            self.finish(job, Outcome::Cancelled, stopped());
        }
        for group in std::mem::take(&mut self.groups) {
            for (_, job) in group.jobs {
                self.finish(job, Outcome::Cancelled, stopped());
            }
            drop(group.batch.into_parts());
        }
    }
}
