//! The fused acceptance step of speculative decoding on the device (kernels/accept.cu): one launch
//! verifies a whole draft block (chain or tree) for the whole batch, reading its inputs from the
//! step's plan words and the drafted tokens from its state words, and writing the decisions back
//! into the state. The algorithm is documented in the kernel; `backend::cpu::accept` is its
//! exact CPU twin.

use super::buffer::{GpuBuf, GpuWords, LaunchBuilder};
use super::driver::{Driver, Kernel};
use super::geometry::ACCEPT_THREADS;
use super::GpuBackend;
use crate::backend::BlockLayout;
use crate::error::{Error, Result};

impl<D: Driver> GpuBackend<D> {
    /// The fused acceptance kernel: `Backend::accept_block` in one launch, with the walk's
    /// scratch (`[batch, 3, vocab]`) kept by the backend and reused.
    pub(super) fn launch_accept_block(&self, p: &GpuBuf<D>, q: &GpuBuf<D>, plan: &GpuWords<D>, block: &BlockLayout, state: &mut GpuWords<D>) -> Result<()> {
        block.check(plan.len(), state.len(), p.len(), q.len())?;
        let mut scratch = self.accept_work.lock().map_err(|_| Error::Backend("accept_block: the scratch buffer is poisoned".into()))?;
        let work = self.scratch(&mut scratch, block.batch * 3 * block.vocab)?;
        let launch = LaunchBuilder::new(&self.driver, (block.batch, 1), ACCEPT_THREADS)?
            .input(p)
            .input(q)
            .input_at(state, block.tokens_at)
            .input_at(plan, block.parents_at)
            .input_at(plan, block.omega_at)
            .input_at(plan, block.u_accept_at)
            .input_at(plan, block.u_sample_at)
            .i32(block.nodes)?
            .i32(block.vocab)?
            .output(work)
            .output_at(state, block.prob_at)
            .output_at(state, block.path_at)
            .output_at(state, block.accepted_at)
            .output_at(state, block.next_at)
            .build();
        // kernels/accept.cu: accept_block(const float* p, const float* q, const unsigned* tokens,
        // const int* parents, const float* omega, const float* u_accept, const float* u_sample,
        // int nodes, int vocab, float* work, float* accept_prob, int* path, unsigned* accepted_len,
        // unsigned* next_token); offsets and lengths checked above, token indices by the kernel.
        self.run(Kernel::AcceptBlock, &launch)
    }
}
