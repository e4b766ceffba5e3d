//! The crate-wide error type: every failure names what went wrong and, where it can, what to do.

use std::path::PathBuf;

/// Everything that can go wrong while loading or running a model. Each variant says what the
/// caller can do about it: fix the request ([`Error::InvalidRequest`]), retry later
/// ([`Error::Busy`], [`Error::KvCacheExhausted`]), fix the weights ([`Error::Io`],
/// [`Error::CorruptWeights`], [`Error::MissingTensor`], [`Error::ShapeMismatch`],
/// [`Error::UnsupportedDtype`], [`Error::Config`], [`Error::NonFiniteLogits`]), use another
/// device ([`Error::Backend`]), nothing (it asked for it: [`Error::Cancelled`],
/// [`Error::DeadlineExceeded`]), or report a bug ([`Error::Internal`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating-system error.
        source: std::io::Error,
    },
    /// A safetensors file is truncated or its header is corrupt.
    #[error("corrupt or truncated safetensors file {path}: {reason}")]
    CorruptWeights {
        /// The file.
        path: PathBuf,
        /// What the parser found.
        reason: String,
    },
    /// A tensor the model needs is not in the weights file.
    #[error("tensor `{name}` is missing from {path} (is this a converted checkpoint? see tools/convert_llamagen.py, tools/convert_mar.py)")]
    MissingTensor {
        /// The tensor name.
        name: String,
        /// The file.
        path: PathBuf,
    },
    /// A tensor has the wrong shape for the configuration.
    #[error("tensor `{name}` in {path} has shape {found:?}, but config.json implies {expected:?}")]
    ShapeMismatch {
        /// The tensor name.
        name: String,
        /// The file.
        path: PathBuf,
        /// Shape implied by the configuration.
        expected: Vec<usize>,
        /// Shape stored in the file.
        found: Vec<usize>,
    },
    /// A tensor has a dtype the engine cannot use.
    #[error("tensor `{name}` in {path} has dtype {dtype}; spire loads F32, F16 and BF16")]
    UnsupportedDtype {
        /// The tensor name.
        name: String,
        /// The file.
        path: PathBuf,
        /// The stored dtype.
        dtype: String,
    },
    /// `config.json` is missing, unparsable or inconsistent.
    #[error("bad model config {path}: {reason}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A request asked for something the model cannot do.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The paged KV cache has no free block left.
    #[error("KV cache exhausted: {needed} more blocks needed, {free} free of {total}; raise the cache size (--kv-blocks) or lower the batch")]
    KvCacheExhausted {
        /// Blocks requested.
        needed: usize,
        /// Blocks free.
        free: usize,
        /// Blocks in the pool.
        total: usize,
    },
    /// The model produced NaN or infinite logits.
    #[error("non-finite logits (NaN/inf) at {context}; the weights are probably corrupt or overflowed")]
    NonFiniteLogits {
        /// Where they appeared.
        context: String,
    },
    /// A backend could not be used (no GPU, driver failure, kernel compilation failure).
    #[error("backend error: {0}")]
    Backend(String),
    /// An internal invariant does not hold: a bug in spire.
    #[error("internal error (a bug in spire; please report it): {0}")]
    Internal(String),
    /// The engine's request queue is full: retry later.
    #[error("busy: {queued} requests are waiting, the queue holds {capacity}; retry later")]
    Busy {
        /// Requests waiting.
        queued: usize,
        /// The queue's capacity.
        capacity: usize,
    },
    /// The request was cancelled (its handle was dropped or cancelled, or the engine shut down).
    #[error("cancelled: {0}")]
    Cancelled(String),
    /// The request's deadline passed before its image was done.
    #[error("deadline exceeded: {elapsed_ms} ms after submission, the deadline was {deadline_ms} ms")]
    DeadlineExceeded {
        /// Time since submission, in ms.
        elapsed_ms: u128,
        /// The request's deadline, in ms after submission.
        deadline_ms: u128,
    },
}

impl Error {
    /// The same error again, for each of several requests one failure ends (an I/O error keeps
    /// its kind and message).
    pub fn replicate(&self) -> Error {
        match self {
            Error::Io { path, source } => Error::Io { path: path.clone(), source: std::io::Error::new(source.kind(), source.to_string()) },
            Error::CorruptWeights { path, reason } => Error::CorruptWeights { path: path.clone(), reason: reason.clone() },
            Error::MissingTensor { name, path } => Error::MissingTensor { name: name.clone(), path: path.clone() },
            Error::ShapeMismatch { name, path, expected, found } => Error::ShapeMismatch { name: name.clone(), path: path.clone(), expected: expected.clone(), found: found.clone() },
            Error::UnsupportedDtype { name, path, dtype } => Error::UnsupportedDtype { name: name.clone(), path: path.clone(), dtype: dtype.clone() },
            Error::Config { path, reason } => Error::Config { path: path.clone(), reason: reason.clone() },
            Error::InvalidRequest(m) => Error::InvalidRequest(m.clone()),
            Error::KvCacheExhausted { needed, free, total } => Error::KvCacheExhausted { needed: *needed, free: *free, total: *total },
            Error::NonFiniteLogits { context } => Error::NonFiniteLogits { context: context.clone() },
            Error::Backend(m) => Error::Backend(m.clone()),
            Error::Internal(m) => Error::Internal(m.clone()),
            Error::Busy { queued, capacity } => Error::Busy { queued: *queued, capacity: *capacity },
            Error::Cancelled(m) => Error::Cancelled(m.clone()),
            Error::DeadlineExceeded { elapsed_ms, deadline_ms } => Error::DeadlineExceeded { elapsed_ms: *elapsed_ms, deadline_ms: *deadline_ms },
        }
    }

    /// Whether the same request may succeed if retried later (the engine was busy or full).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Busy { .. } | Error::KvCacheExhausted { .. })
    }
}

/// Result with the crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
