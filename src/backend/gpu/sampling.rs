//! Logits processing on the device (kernels/sampling.cu): one launch turns the logits of a whole
//! draft block and batch into the distributions tokens are drawn from (CFG mix, temperature,
//! top-k, softmax, top-p; `SamplingParams::distribution` of [`crate::sampling`]), with a flag per
//! row for non-finite logits. The algorithm is documented in the kernel;
//! [`super::sampling_reference::process_logits`] is its exact CPU twin.

use super::buffer::{DevVec, GpuBuf, LaunchBuilder};
use super::driver::{Driver, Kernel};
use super::geometry::SAMPLING_THREADS;
use super::GpuBackend;
use crate::error::{Error, Result};
use crate::sampling::SamplingParams;

/// Flag of a row whose (CFG-mixed, or temperature-scaled) logits are not all finite.
pub const ROW_NONFINITE: u32 = 1;
/// Flag of a row whose index in a device row map is beyond the logits (only through
/// [`GpuBackend::process_logits_mapped`]; host row maps are checked before the launch).
pub const ROW_BAD_INDEX: u32 = 2;

/// Which rows of a `[rows_in, vocab]` logits buffer each output row reads.
#[derive(Clone, Copy, Debug)]
pub struct LogitRows<'a> {
    /// Vocabulary size (row width of the logits and of the output).
    pub vocab: usize,
    /// Row of the logits holding each output row's conditional logits, `[rows_out]`.
    pub cond: &'a [u32],
    /// Row holding each output row's unconditional (null-class) logits, `[rows_out]`; read only
    /// when the parameters use CFG (`cfg_scale > 1`), as `SamplingParams::distribution` ignores
    /// `uncond` without CFG.
    pub uncond: Option<&'a [u32]>,
}

impl LogitRows<'_> {
    /// Output rows.
    pub fn rows_out(&self) -> usize {
        self.cond.len()
    }

    /// Whether the kernel mixes with the unconditional rows under `params`.
    pub fn mixes(&self, params: &SamplingParams) -> bool {
        params.uses_cfg() && self.uncond.is_some()
    }

    /// The kernel's row map: the conditional rows, then (with CFG) the unconditional ones.
    pub fn row_map(&self, params: &SamplingParams) -> Vec<u32> {
        let mut map = self.cond.to_vec();
        if let (true, Some(u)) = (self.mixes(params), self.uncond) {
            map.extend_from_slice(u);
        }
        map
    }

    /// Check the parameters, the row indices against `logits_len` and the output lengths
    /// (`probs_len = rows_out * vocab`, `flags_len = rows_out`). Returns `rows_in`.
    pub fn validate(&self, params: &SamplingParams, logits_len: usize, probs_len: usize, flags_len: usize) -> Result<usize> {
        params.validate()?;
        let rows_in = check_shape(self.vocab, logits_len, self.rows_out(), probs_len, flags_len)?;
        if let Some(u) = self.uncond {
            if u.len() != self.cond.len() {
                return Err(Error::InvalidRequest(format!("process_logits: {} unconditional rows for {} conditional ones", u.len(), self.cond.len())));
            }
        }
        let used = self.row_map(params);
        if let Some(bad) = used.iter().find(|&&r| r as usize >= rows_in) {
            return Err(Error::InvalidRequest(format!("process_logits: logits row {bad} out of range (the logits have {rows_in} rows)")));
        }
        Ok(rows_in)
    }
}

/// Lengths against the geometry; returns `rows_in`.
fn check_shape(vocab: usize, logits_len: usize, rows_out: usize, probs_len: usize, flags_len: usize) -> Result<usize> {
    let ok = vocab > 0
        && vocab <= i32::MAX as usize
        && logits_len.is_multiple_of(vocab)
        && logits_len / vocab <= i32::MAX as usize
        && rows_out <= i32::MAX as usize
        && probs_len == rows_out * vocab
        && flags_len == rows_out;
    if ok {
        Ok(logits_len / vocab)
    } else {
        Err(Error::InvalidRequest(format!(
            "process_logits: {logits_len} logits of vocab {vocab} into {probs_len} probabilities and {flags_len} flags for {rows_out} rows"
        )))
    }
}

/// The kernel's `top_k` argument: 0 (off) for 0 or `top_k >= vocab`, as on the host.
pub(crate) fn effective_top_k(params: &SamplingParams, vocab: usize) -> usize {
    if params.top_k < vocab {
        params.top_k
    } else {
        0
    }
}

impl<D: Driver> GpuBackend<D> {
    /// Process `logits` (`[rows_in, vocab]` on the device) into `probs` (`[rows_out, vocab]`) in
    /// one launch, reading the rows `rows` names (one host-to-device copy: the row map), and set
    /// `nonfinite[r]` to [`ROW_NONFINITE`] (row filled with NaN) or 0. `probs` is exactly what
    /// [`super::sampling_reference::process_logits`] computes.
    pub fn process_logits(
        &self,
        logits: &GpuBuf<D>,
        rows: &LogitRows<'_>,
        params: &SamplingParams,
        probs: &mut GpuBuf<D>,
        nonfinite: &mut DevVec<u32, D>,
    ) -> Result<()> {
        rows.validate(params, logits.len(), probs.len(), nonfinite.len())?;
        let map = self.upload_vec(&rows.row_map(params))?;
        self.process_logits_mapped(logits, &map, rows.vocab, rows.mixes(params), params, probs, nonfinite)
    }

    /// [`Self::process_logits`] with the row map already on the device (no copy): `row_map`
    /// holds `rows_out` conditional row indices, then, when `cfg` (and `params.uses_cfg()`),
    /// `rows_out` unconditional ones; `rows_out = probs.len() / vocab`. An index beyond the logits
    /// is not read: its row is NaN and flagged [`ROW_BAD_INDEX`].
    #[allow(clippy::too_many_arguments)]
    pub fn process_logits_mapped(
        &self,
        logits: &GpuBuf<D>,
        row_map: &DevVec<u32, D>,
        vocab: usize,
        cfg: bool,
        params: &SamplingParams,
        probs: &mut GpuBuf<D>,
        nonfinite: &mut DevVec<u32, D>,
    ) -> Result<()> {
        params.validate()?;
        let rows_out = nonfinite.len();
        let rows_in = check_shape(vocab, logits.len(), rows_out, probs.len(), nonfinite.len())?;
        let cfg = cfg && params.uses_cfg();
        let map_len = rows_out * if cfg { 2 } else { 1 };
        if row_map.len() != map_len {
            return Err(Error::InvalidRequest(format!("process_logits: a row map of {} indices for {rows_out} rows (cfg {cfg})", row_map.len())));
        }
        let launch = LaunchBuilder::new(&self.driver, (rows_out, 1), SAMPLING_THREADS)?
            .input(logits)
            .i32(rows_in)?
            .input(row_map)
            .i32(rows_out)?
            .i32(vocab)?
            .i32(usize::from(cfg))?
            .f32(params.cfg_scale)
            .f32(params.temperature)
            .i32(effective_top_k(params, vocab))?
            .f32(params.top_p)
            .output(probs)
            .output(nonfinite)
            .build();
        // kernels/sampling.cu: process_logits(const float* logits, int rows_in, const unsigned* rows,
        // int rows_out, int vocab, int use_cfg, float cfg_scale, float temperature, int top_k,
        // float top_p, float* probs, unsigned* nonfinite); lengths checked above, indices by the
        // kernel.
        self.run(Kernel::ProcessLogits, &launch)
    }

    /// A device row map for [`Self::process_logits_mapped`] (e.g. built once per batch shape).
    pub fn upload_row_map(&self, map: &[u32]) -> Result<DevVec<u32, D>> {
        self.upload_vec(map)
    }

    /// Zeroed per-row flags for `rows` output rows.
    pub fn row_flags(&self, rows: usize) -> Result<DevVec<u32, D>> {
        self.alloc(rows)
    }

    /// The flags back on the host.
    pub fn read_row_flags(&self, flags: &DevVec<u32, D>) -> Result<Vec<u32>> {
        self.download_vec(flags)
    }
}
