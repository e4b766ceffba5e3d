//! What a caller holds while its request runs on an [`crate::Engine`]: a handle to wait on (from
//! sync or async code), read progress from, and cancel through (dropping it cancels too).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::decode::GenerationStats;
use crate::error::{Error, Result};
use crate::image::Image;

/// A finished request: the image, its tokens and what producing them cost.
#[derive(Clone, Debug)]
pub struct Generated {
    /// The decoded image.
    pub image: Image,
    /// Image tokens, row-major over the token grid.
    pub tokens: Vec<u32>,
    /// Counters; `elapsed` is the time from submission to the last token.
    pub stats: GenerationStats,
}

/// What a running request reports as it goes.
#[derive(Clone, Debug)]
pub enum Progress {
    /// Tokens committed by one decoding step.
    Tokens {
        /// The tokens this step committed.
        new: Vec<u32>,
        /// Tokens committed so far.
        done: usize,
        /// Tokens of a whole image.
        total: usize,
    },
    /// A preview of the image so far (see `Request::preview_every`).
    Preview(Image),
}

/// The engine's side of a request: where its progress and result go, and whether the caller
/// still wants it.
pub(super) struct Reply {
    progress: mpsc::UnboundedSender<Progress>,
    result: oneshot::Sender<Result<Generated>>,
    cancelled: Arc<AtomicBool>,
}

impl Reply {
    /// Whether the caller cancelled or dropped its handle.
    pub(super) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed) || self.result.is_closed()
    }

    /// Report progress (ignored once the caller stopped listening).
    pub(super) fn progress(&self, progress: Progress) {
        let _ = self.progress.send(progress);
    }

    /// Deliver the result (ignored once the handle is gone).
    pub(super) fn finish(self, result: Result<Generated>) {
        let _ = self.result.send(result);
    }
}

/// A request in flight on an [`crate::Engine`]. Wait for it with [`GenerationHandle::wait`]
/// (blocking) or [`GenerationHandle::result`] (async); read its progress with
/// [`GenerationHandle::next_progress`]; stop it with [`GenerationHandle::cancel`] or by dropping
/// the handle, which frees its KV blocks at the engine's next step.
///
/// ```
/// use spire::{Engine, Error, Progress, Request};
/// let engine = Engine::load("weights/demo")?;
/// let mut handle = engine.submit(Request::new(1, 5))?;
/// if let Some(Progress::Tokens { done, total, .. }) = handle.blocking_progress() {
///     assert!(done >= 1 && total == 64);
/// }
/// handle.cancel();
/// assert!(matches!(handle.wait(), Err(Error::Cancelled(_)) | Ok(_)));
/// # Ok::<(), spire::Error>(())
/// ```
#[derive(Debug)]
pub struct GenerationHandle {
    progress: mpsc::UnboundedReceiver<Progress>,
    result: oneshot::Receiver<Result<Generated>>,
    cancelled: Arc<AtomicBool>,
}

/// A connected handle and reply.
pub(super) fn channel() -> (GenerationHandle, Reply) {
    let (progress_tx, progress_rx) = mpsc::unbounded_channel();
    let (result_tx, result_rx) = oneshot::channel();
    let cancelled = Arc::new(AtomicBool::new(false));
    (
        GenerationHandle { progress: progress_rx, result: result_rx, cancelled: Arc::clone(&cancelled) },
        Reply { progress: progress_tx, result: result_tx, cancelled },
    )
}

/// The result of a reply that was dropped without an answer (the engine stopped).
fn engine_gone<T>(_: T) -> Error {
    Error::Cancelled("the engine shut down before the request finished".into())
}

impl GenerationHandle {
    /// Block until the image is done (call from sync code, not from inside an async runtime).
    pub fn wait(mut self) -> Result<Generated> {
        // `self` (whose drop cancels) lives until the result is in.
        self.take_result().blocking_recv().map_err(engine_gone)?
    }

    /// Wait for the image (async).
    pub async fn result(mut self) -> Result<Generated> {
        let result = self.take_result().await;
        drop(self);
        result.map_err(engine_gone)?
    }

    /// The result's receiver, leaving a closed one in its place.
    fn take_result(&mut self) -> oneshot::Receiver<Result<Generated>> {
        std::mem::replace(&mut self.result, oneshot::channel().1)
    }

    /// The next progress report (async); `None` once the request is over.
    pub async fn next_progress(&mut self) -> Option<Progress> {
        self.progress.recv().await
    }

    /// The next progress report, waiting for it (sync); `None` once the request is over.
    pub fn blocking_progress(&mut self) -> Option<Progress> {
        self.progress.blocking_recv()
    }

    /// Stop the request; its result becomes [`Error::Cancelled`].
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }
}

impl Drop for GenerationHandle {
    fn drop(&mut self) {
        self.cancel();
    }
}
