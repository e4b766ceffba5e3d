//! [`Engine`]: the models of a weights directory on a device chosen at run time, serving requests
//! from any number of threads or async tasks through a scheduler that batches them (see
//! `worker.rs`). Cheap to clone; every clone talks to the same scheduler.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::backend_engine::BackendEngine;
use super::device::Device;
use super::handle::{channel, Generated, GenerationHandle};
use super::metrics::{EngineStats, Metrics, Outcome};
use super::request::Request;
use super::worker::{self, Job};
use crate::backend::{Backend, CpuBackend, KvDtype};
use crate::error::{Error, Result};
use crate::image::Image;
use crate::weights::ModelConfig;

/// Images decoded together at most, by default.
pub const DEFAULT_MAX_BATCH: usize = 16;
/// Requests that may wait for a batch, by default.
pub const DEFAULT_QUEUE_CAPACITY: usize = 256;

/// A model set serving image requests (see the module docs).
///
/// ```
/// use spire::{Device, Engine, Request};
/// // The device is a run-time choice, e.g. from a service's configuration.
/// let device: Device = std::env::var("SPIRE_DEVICE").unwrap_or_else(|_| "cpu".into()).parse()?;
/// let engine = Engine::builder("weights/demo").device(device).max_batch(8).build()?;
/// let image = engine.generate(&Request::new(3, 42))?;
/// assert_eq!((image.width, image.height), (32, 32));
/// # Ok::<(), spire::Error>(())
/// ```
#[derive(Clone)]
pub struct Engine {
    shared: Arc<Shared>,
}

/// What every clone of an engine shares.
struct Shared {
    /// The scheduler's queue (`None` once shutting down).
    jobs: Mutex<Option<Sender<Job>>>,
    worker: Mutex<Option<JoinHandle<()>>>,
    metrics: Arc<Metrics>,
    /// Jobs submitted and not yet in a batch.
    queued: Arc<AtomicUsize>,
    queue_capacity: usize,
    device: String,
    config: ModelConfig,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Closing the queue stops the scheduler once it has cancelled what is left.
        self.jobs.get_mut().map(Option::take).ok();
        if let Ok(worker) = self.worker.get_mut() {
            if let Some(worker) = worker.take() {
                let _ = worker.join();
            }
        }
    }
}

/// How to build an [`Engine`]: `Engine::builder(dir).device(...)...build()`.
#[derive(Clone, Debug)]
pub struct EngineBuilder {
    dir: PathBuf,
    device: Device,
    kv_blocks: Option<usize>,
    kv_dtype: KvDtype,
    max_batch: usize,
    queue_capacity: usize,
}

impl EngineBuilder {
    /// Run on `device` (default [`Device::Cpu`]).
    pub fn device(mut self, device: Device) -> Self {
        self.device = device;
        self
    }

    /// KV pool blocks per model and batch (default: enough for `max_batch` images).
    pub fn kv_blocks(mut self, blocks: usize) -> Self {
        self.kv_blocks = Some(blocks);
        self
    }

    /// KV cache element type (default f32).
    pub fn kv_dtype(mut self, dtype: KvDtype) -> Self {
        self.kv_dtype = dtype;
        self
    }

    /// Images decoded together at most (default [`DEFAULT_MAX_BATCH`]).
    pub fn max_batch(mut self, images: usize) -> Self {
        self.max_batch = images.max(1);
        self
    }

    /// Requests that may wait for a batch before [`Engine::submit`] answers [`Error::Busy`]
    /// (default [`DEFAULT_QUEUE_CAPACITY`]).
    pub fn queue_capacity(mut self, requests: usize) -> Self {
        self.queue_capacity = requests;
        self
    }

    /// Load the weights on the device and start the scheduler.
    pub fn build(self) -> Result<Engine> {
        match self.device {
            Device::Cpu => self.start(CpuBackend),
            Device::Emulator => self.start_emulator(),
            Device::Cuda(ordinal) => self.start_cuda(ordinal),
        }
    }

    #[cfg(feature = "emulator")]
    fn start_emulator(self) -> Result<Engine> {
        self.start(crate::backend::EmuBackend::new()?)
    }

    #[cfg(not(feature = "emulator"))]
    fn start_emulator(self) -> Result<Engine> {
        Err(Error::Backend("this build has no CUDA emulator: rebuild with the `emulator` feature".into()))
    }

    #[cfg(feature = "cuda")]
    fn start_cuda(self, ordinal: usize) -> Result<Engine> {
        self.start(crate::backend::CudaBackend::new(ordinal)?)
    }

    #[cfg(not(feature = "cuda"))]
    fn start_cuda(self, _ordinal: usize) -> Result<Engine> {
        Err(Error::Backend("this build has no CUDA backend: rebuild with `--features cuda`".into()))
    }

    /// Load onto `backend` and start the scheduler thread.
    fn start<B: Backend + 'static>(self, backend: B) -> Result<Engine> {
        let mut engine = BackendEngine::load_on(backend, &self.dir)?.with_kv_dtype(self.kv_dtype);
        if let Some(blocks) = self.kv_blocks {
            engine = engine.with_kv_blocks(blocks);
        }
        let (device, config) = (engine.backend().name(), engine.config().clone());
        let metrics = Arc::new(Metrics::new()?);
        let queued = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = std::sync::mpsc::channel();
        let (worker_metrics, worker_queued, max_batch) = (Arc::clone(&metrics), Arc::clone(&queued), self.max_batch);
        let worker = std::thread::Builder::new()
            .name("spire-scheduler".into())
            .spawn(move || worker::run(engine, rx, worker_metrics, worker_queued, max_batch))
            .map_err(|e| Error::Backend(format!("cannot start the scheduler thread: {e}")))?;
        let shared = Shared { jobs: Mutex::new(Some(tx)), worker: Mutex::new(Some(worker)), metrics, queued, queue_capacity: self.queue_capacity, device, config };
        Ok(Engine { shared: Arc::new(shared) })
    }
}

impl Engine {
    /// Load `dir` (config.json plus safetensors) on the CPU with default settings.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
        Self::builder(dir).build()
    }

    /// A builder for an engine on the weights in `dir`.
    pub fn builder(dir: impl AsRef<Path>) -> EngineBuilder {
        EngineBuilder { dir: dir.as_ref().to_path_buf(), device: Device::Cpu, kv_blocks: None, kv_dtype: KvDtype::F32, max_batch: DEFAULT_MAX_BATCH, queue_capacity: DEFAULT_QUEUE_CAPACITY }
    }

    /// Queue `request`: a handle to wait on, stream and cancel. Bad requests are refused here
    /// ([`Error::InvalidRequest`]); a full queue answers [`Error::Busy`] (retry later).
    pub fn submit(&self, request: Request) -> Result<GenerationHandle> {
        request.validate(&self.shared.config)?;
        let shared = &self.shared;
        let queued = shared.queued.fetch_add(1, Ordering::Relaxed);
        if queued >= shared.queue_capacity {
            shared.queued.fetch_sub(1, Ordering::Relaxed);
            shared.metrics.outcome(Outcome::Rejected);
            return Err(Error::Busy { queued, capacity: shared.queue_capacity });
        }
        let (handle, reply) = channel();
        let sent = shared.jobs.lock().ok().and_then(|jobs| jobs.as_ref().map(|tx| tx.send(Job::new(request, reply)).is_ok()));
        if sent != Some(true) {
            shared.queued.fetch_sub(1, Ordering::Relaxed);
            return Err(Error::Cancelled("the engine is shutting down".into()));
        }
        Ok(handle)
    }

    /// Generate one image, blocking until it is done (from sync code).
    pub fn generate(&self, request: &Request) -> Result<Image> {
        Ok(self.submit(request.clone())?.wait()?.image)
    }

    /// Generate every request, batched together where their settings agree, blocking until all
    /// are done; the first failure fails the call (the other requests are cancelled).
    pub fn generate_batch(&self, requests: &[Request]) -> Result<Vec<Image>> {
        let handles = requests.iter().map(|r| self.submit(r.clone())).collect::<Result<Vec<_>>>()?;
        handles.into_iter().map(|h| h.wait().map(|g: Generated| g.image)).collect()
    }

    /// The device's description ("cpu (2 threads)", "cuda:0 (NVIDIA H100 ...)").
    pub fn device(&self) -> &str {
        &self.shared.device
    }

    /// The parsed `config.json`.
    pub fn config(&self) -> &ModelConfig {
        &self.shared.config
    }

    /// The engine's counters and gauges now.
    pub fn stats(&self) -> EngineStats {
        self.shared.metrics.snapshot()
    }

    /// Every metric in the Prometheus text exposition format.
    pub fn metrics_text(&self) -> Result<String> {
        self.shared.metrics.text()
    }
}
