//! Logits processing and drafting on the device: `process_logits` (kernels/sampling.cu) turns
//! the logits of a whole draft block and batch into the distributions tokens are drawn from (CFG
//! mix, temperature, top-k, softmax, top-p; `SamplingParams::distribution` of
//! [`crate::sampling`]) in one launch, with a flag per row for non-finite logits;
//! `sample_children` (kernels/accept.cu) draws a whole tree level's children without
//! replacement. The algorithms are documented in the kernels; `backend::cpu::sampling` and
//! `backend::cpu::children` are their exact CPU twins.

use super::buffer::{DevVec, GpuBuf, LaunchBuilder};
use super::driver::{Driver, Kernel};
use super::geometry::{ACCEPT_THREADS, SAMPLING_THREADS};
use super::GpuBackend;
use crate::backend::cpu::sampling::{check_map, effective_top_k};
use crate::backend::ops::{check_parts, ChildDraws, LogitsMap};
use crate::error::{Error, Result};
use crate::sampling::SamplingParams;

impl<D: Driver> GpuBackend<D> {
    /// `Backend::process_logits`: one launch, one block per output row.
    pub(super) fn launch_process_logits(
        &self,
        logits: &GpuBuf<D>,
        words: &DevVec<u32, D>,
        map: LogitsMap,
        params: &SamplingParams,
        probs: &mut GpuBuf<D>,
        flags: &mut DevVec<u32, D>,
    ) -> Result<()> {
        let rows_in = check_map(&map, params, logits.len(), words.len(), probs.len(), flags.len())?;
        let launch = LaunchBuilder::new(&self.driver, (map.rows, 1), SAMPLING_THREADS)?
            .input(logits)
            .i32(rows_in)?
            .input_at(words, map.map_at)
            .i32(map.rows)?
            .i32(map.vocab)?
            .i32(usize::from(map.cfg && params.uses_cfg()))?
            .f32(params.cfg_scale)
            .f32(params.temperature)
            .i32(effective_top_k(params, map.vocab))?
            .f32(params.top_p)
            .input_at(words, map.dst_at)
            .i32(probs.len() / map.vocab)?
            .output(probs)
            .output_at(flags, map.flags_at)
            .build();
        // kernels/sampling.cu: process_logits(const float* logits, int rows_in, const unsigned* rows,
        // int rows_out, int vocab, int use_cfg, float cfg_scale, float temperature, int top_k,
        // float top_p, const unsigned* dst, int probs_rows, float* probs, unsigned* nonfinite);
        // lengths and offsets checked above (flags hold every destination row), indices by the
        // kernel.
        self.run(Kernel::ProcessLogits, &launch)
    }

    /// `Backend::sample_children`: one launch, one block per parent.
    pub(super) fn launch_sample_children(&self, probs: &GpuBuf<D>, words: &DevVec<u32, D>, draws: ChildDraws, tokens: &mut DevVec<u32, D>) -> Result<()> {
        check_parts("sample_children", words.len(), &[(draws.rows_at, draws.parents), (draws.first_at, draws.parents), (draws.uniforms_at, draws.parents * draws.width)])?;
        if draws.vocab == 0 || !probs.len().is_multiple_of(draws.vocab) || draws.width > i32::MAX as usize {
            return Err(Error::Backend(format!("sample_children: {} probabilities of vocab {}", probs.len(), draws.vocab)));
        }
        let launch = LaunchBuilder::new(&self.driver, (draws.parents, 1), ACCEPT_THREADS)?
            .input(probs)
            .i32(probs.len() / draws.vocab)?
            .i32(draws.vocab)?
            .input_at(words, draws.rows_at)
            .input_at(words, draws.first_at)
            .input_at(words, draws.uniforms_at)
            .i32(draws.width)?
            .i32(tokens.len())?
            .output(tokens)
            .build();
        // kernels/accept.cu: sample_children(const float* probs, int probs_rows, int vocab,
        // const unsigned* rows, const unsigned* first, const float* uniforms, int width,
        // int tokens_len, unsigned* tokens); offsets checked above, indices by the kernel.
        self.run(Kernel::SampleChildren, &launch)
    }
}
