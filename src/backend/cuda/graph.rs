//! CUDA graphs: a piece of captured stream work instantiated once and replayed with one launch.

use std::sync::Arc;

use cudarc::driver::sys::{CUgraph, CUgraphExec, CUgraphInstantiate_flags, CUstreamCaptureMode};
use cudarc::driver::{result, CudaStream};

use super::cuda_error;
use crate::error::Result;

/// An instantiated CUDA graph and the stream it replays on; destroyed on drop.
pub struct CudaGraphExec {
    graph: CUgraph,
    exec: CUgraphExec,
    stream: Arc<CudaStream>,
}

// SAFETY: a graph and its executable are plain driver handles usable from any thread with the
// context bound (done before every call); the backend serialises every use of one graph (its
// graph cache is behind a mutex), as the CUDA docs require.
unsafe impl Send for CudaGraphExec {}
// SAFETY: as above.
unsafe impl Sync for CudaGraphExec {}

impl CudaGraphExec {
    /// Capture what `issue` queues on `stream` (thread-local capture: other threads' work is not
    /// captured) and instantiate it; nothing runs.
    pub(super) fn capture(stream: &Arc<CudaStream>, issue: impl FnOnce() -> Result<()>) -> Result<Self> {
        stream.context().bind_to_thread().map_err(cuda_error("graph capture"))?;
        // SAFETY: the stream is valid and not the legacy default stream (the driver creates its
        // own); the capture is ended below on every path.
        unsafe { result::stream::begin_capture(stream.cu_stream(), CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL) }
            .map_err(cuda_error("begin graph capture"))?;
        let issued = issue();
        // SAFETY: the capture begun above.
        let graph = unsafe { result::stream::end_capture(stream.cu_stream()) }.map_err(cuda_error("end graph capture"))?;
        if let Err(e) = issued {
            // SAFETY: the graph just captured, destroyed once.
            let _ = unsafe { result::graph::destroy(graph) };
            return Err(e);
        }
        // SAFETY: the graph is valid; on failure it is destroyed once.
        match unsafe { result::graph::instantiate(graph, CUgraphInstantiate_flags(0)) } {
            Ok(exec) => Ok(Self { graph, exec, stream: Arc::clone(stream) }),
            Err(e) => {
                // SAFETY: as above.
                let _ = unsafe { result::graph::destroy(graph) };
                Err(cuda_error("instantiate graph")(e))
            }
        }
    }

    /// Queue one replay on the graph's stream.
    pub(super) fn launch(&self) -> Result<()> {
        self.stream.context().bind_to_thread().map_err(cuda_error("graph launch"))?;
        // SAFETY: the executable and the stream are valid for this graph's lifetime.
        unsafe { result::graph::launch(self.exec, self.stream.cu_stream()) }.map_err(cuda_error("graph launch"))
    }
}

impl Drop for CudaGraphExec {
    fn drop(&mut self) {
        // SAFETY: both handles were created by `capture` and are destroyed once, here.
        unsafe {
            let _ = result::graph::exec_destroy(self.exec);
            let _ = result::graph::destroy(self.graph);
        }
    }
}
