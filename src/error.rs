//! The crate-wide error type: every failure names what went wrong and, where it can, what to do.

use std::path::PathBuf;

/// Everything that can go wrong while loading or running a model.
#[derive(Debug, thiserror::Error)]
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
}

/// Result with the crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
