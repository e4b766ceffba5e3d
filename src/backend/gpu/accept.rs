//! The fused acceptance step of speculative decoding on the device (kernels/accept.cu): one launch
//! verifies a whole draft block (chain or tree) for the whole batch. The algorithm is documented
//! in the kernel; `backend::cpu::accept` is its exact CPU twin.

use super::buffer::{GpuBuf, LaunchBuilder};
use super::driver::{Driver, Kernel};
use super::geometry::ACCEPT_THREADS;
use super::GpuBackend;
use crate::backend::{Acceptance, DraftBlock};
use crate::error::Result;

impl<D: Driver> GpuBackend<D> {
    /// The fused acceptance kernel: `Backend::accept_block` in one launch.
    pub(super) fn launch_accept_block(&self, p: &GpuBuf<D>, q: &GpuBuf<D>, block: &DraftBlock<'_>) -> Result<Acceptance> {
        block.validate(p.len(), q.len())?;
        let (tokens, parents) = (self.upload_vec(block.tokens)?, self.upload_vec(block.parents)?);
        let omega = self.upload_vec(block.omega)?;
        let (u_accept, u_sample) = (self.upload_vec(block.u_accept)?, self.upload_vec(block.u_sample)?);
        let per_node = block.batch * block.nodes;
        let mut work = self.alloc::<f32>(block.batch * 3 * block.vocab)?;
        let mut accept_prob = self.alloc::<f32>(per_node)?;
        let mut path = self.alloc::<i32>(per_node)?;
        let mut accepted_len = self.alloc::<u32>(block.batch)?;
        let mut next = self.alloc::<u32>(block.batch)?;
        let launch = LaunchBuilder::new(&self.driver, (block.batch, 1), ACCEPT_THREADS)?
            .input(p)
            .input(q)
            .input(&tokens)
            .input(&parents)
            .input(&omega)
            .input(&u_accept)
            .input(&u_sample)
            .i32(block.nodes)?
            .i32(block.vocab)?
            .output(&mut work)
            .output(&mut accept_prob)
            .output(&mut path)
            .output(&mut accepted_len)
            .output(&mut next)
            .build();
        self.run(Kernel::AcceptBlock, &launch)?;

        let accept_prob = self.download_vec(&accept_prob)?;
        let path = self.download_vec(&path)?;
        let accepted_len = self.download_vec(&accepted_len)?;
        let next = self.download_vec(&next)?;
        let paths = (0..block.batch)
            .map(|b| path[b * block.nodes..][..accepted_len[b] as usize].iter().map(|&n| n as usize).collect())
            .collect();
        Ok(Acceptance { paths, next, accept_prob })
    }
}
