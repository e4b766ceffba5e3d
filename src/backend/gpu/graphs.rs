//! Graphs for fixed-shape device work (`Backend::graphed`): a region's launches and GEMMs are
//! recorded instead of run, then replayed as one captured graph when exactly the same work (every
//! kernel, geometry and parameter, device addresses included) was seen before, so a decoding
//! step's passes cost one host launch each once their shapes repeat (a CUDA graph on a GPU).
//!
//! - Keyed by the work itself, a graph can only replay work whose addresses are the live buffers
//!   the region just used: no stale pointer is ever replayed.
//! - A shape is captured the second time it is seen (one-off shapes, such as a catch-up pass of
//!   an unusual length, run directly rather than paying for a capture); at most [`MAX_GRAPHS`]
//!   are kept (the cache starts over when full).
//! - Any other device operation inside a region (an allocation, a copy) first runs the work
//!   recorded so far, so recording never reorders work around it.
//! - Only the thread that opened a region records; other threads' work runs as usual.
//! - A capture that fails turns graphs off for the backend and is reported by
//!   [`GpuBackend::graph_status`]; the work then runs directly.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::thread::ThreadId;

use super::driver::{Driver, Work};
use super::GpuBackend;
use crate::error::{Error, Result};

/// Graphs kept per backend.
pub const MAX_GRAPHS: usize = 64;

/// The record and replay state of a backend.
pub(super) struct Graphs<D: Driver> {
    /// Why graphs are off (`None`: on).
    off: Option<String>,
    /// The recording thread and what it recorded so far.
    recording: Option<(ThreadId, Vec<Work>)>,
    captured: HashMap<Vec<u64>, Arc<D::Graph>>,
    seen: HashSet<Vec<u64>>,
}

impl<D: Driver> Default for Graphs<D> {
    fn default() -> Self {
        Self { off: None, recording: None, captured: HashMap::new(), seen: HashSet::new() }
    }
}

/// The key of a piece of work: every word of every launch.
fn key_of(work: &[Work]) -> Vec<u64> {
    let mut key = Vec::with_capacity(work.len() * 16);
    work.iter().for_each(|w| w.key_into(&mut key));
    key
}

impl<D: Driver> GpuBackend<D> {
    fn lock_graphs(&self) -> Result<std::sync::MutexGuard<'_, Graphs<D>>> {
        self.graphs.lock().map_err(|_| Error::Backend("graphs: the recording state is poisoned".into()))
    }

    /// Turn graphs on (default) or off.
    pub fn set_graphs(&self, on: bool) -> Result<()> {
        let mut graphs = self.lock_graphs()?;
        graphs.off = (!on).then(|| "turned off".to_string());
        graphs.captured.clear();
        graphs.seen.clear();
        Ok(())
    }

    /// `None` while graphs are on, else why they are off (turned off, or a capture failed).
    pub fn graph_status(&self) -> Option<String> {
        self.graphs.lock().ok().and_then(|g| g.off.clone())
    }

    /// Record `work` if this thread is recording; returns whether it did.
    pub(super) fn record(&self, work: &Work) -> Result<bool> {
        let mut graphs = self.lock_graphs()?;
        match &mut graphs.recording {
            Some((thread, list)) if *thread == std::thread::current().id() => {
                list.push(work.clone());
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Run the work this thread recorded so far (before a device operation that is not
    /// recorded), keeping the recording open.
    pub(super) fn flush_recording(&self) -> Result<()> {
        let pending = {
            let mut graphs = self.lock_graphs()?;
            match &mut graphs.recording {
                Some((thread, list)) if *thread == std::thread::current().id() => std::mem::take(list),
                _ => return Ok(()),
            }
        };
        pending.iter().try_for_each(|w| self.execute_now(w))
    }

    /// The region `f`, its work replayed as a graph when the same work was captured before
    /// (see the module docs).
    pub(super) fn run_graphed(&self, f: &mut dyn FnMut() -> Result<()>) -> Result<()> {
        {
            let mut graphs = self.lock_graphs()?;
            if graphs.off.is_some() || graphs.recording.is_some() {
                drop(graphs);
                return f();
            }
            graphs.recording = Some((std::thread::current().id(), Vec::new()));
        }
        let result = f();
        let work = self.lock_graphs()?.recording.take().map(|(_, list)| list).unwrap_or_default();
        result?;
        self.replay_or_run(work)
    }

    /// Replay `work`'s graph, capture it on its second sighting, or run it directly.
    fn replay_or_run(&self, work: Vec<Work>) -> Result<()> {
        if work.is_empty() {
            return Ok(());
        }
        let key = key_of(&work);
        let (graph, capture) = {
            let mut graphs = self.lock_graphs()?;
            match graphs.captured.get(&key) {
                Some(graph) => (Some(Arc::clone(graph)), false),
                None => (None, !graphs.seen.insert(key.clone())),
            }
        };
        let graph = match (graph, capture) {
            (Some(graph), _) => graph,
            (None, false) => return work.iter().try_for_each(|w| self.execute_now(w)),
            (None, true) => {
                // SAFETY: the work was built by this backend's launch methods from live buffers
                // (see `run`), and it is replayed only while equal work is issued again.
                match unsafe { self.driver.capture(&work) } {
                    Ok(graph) => {
                        let graph = Arc::new(graph);
                        let mut graphs = self.lock_graphs()?;
                        if graphs.captured.len() >= MAX_GRAPHS {
                            graphs.captured.clear();
                            graphs.seen.clear();
                        }
                        graphs.captured.insert(key, Arc::clone(&graph));
                        graph
                    }
                    Err(e) => {
                        self.lock_graphs()?.off = Some(format!("a capture failed: {e}"));
                        return work.iter().try_for_each(|w| self.execute_now(w));
                    }
                }
            }
        };
        self.count_graph(work.len());
        // SAFETY: the graph holds exactly `work`, whose addresses are the live buffers of the
        // region that just recorded it.
        unsafe { self.driver.replay(&graph) }
    }
}
