//! The arguments of the decoding-step ops: where each op's index arrays sit in a packed words
//! buffer ([`Packed`], uploaded once per step) and, for outputs, in the step's state words.
//! Each description is built on the host by its `pack` constructor, which appends the arrays;
//! the ops check the offsets against the buffers' lengths, and the kernels (and their CPU twins)
//! check every index they read, so the values are never trusted.

use crate::backend::Packed;
use crate::error::{Error, Result};

/// The token of a draft-tree node that could not be drawn (its parent's distribution ran out of
/// support): never accepted, embedded as a zero row.
pub const NO_TOKEN: u32 = u32::MAX;

/// Flag of a processed row whose (CFG-mixed, or temperature-scaled) logits are not all finite;
/// the row is filled with NaN.
pub const ROW_NONFINITE: u32 = 1;
/// Flag of a processed row whose logits row index is beyond the logits; the row is NaN.
pub const ROW_BAD_INDEX: u32 = 2;

/// An RMSNorm folded into the GEMM that follows it: its `[dim]` weight and epsilon.
#[derive(Debug)]
pub struct RmsNorm<'a, W> {
    /// The norm's weight.
    pub weight: &'a W,
    /// Added to the mean square before the square root.
    pub eps: f32,
}

impl<W> Clone for RmsNorm<'_, W> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<W> Copy for RmsNorm<'_, W> {}

/// A row-major GEMM `out[rows, n] = x[rows, k] · wᵀ` for a PyTorch-layout weight `w[n, k]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GemmShape {
    /// Rows of `x` and `out`.
    pub rows: usize,
    /// Inner dimension.
    pub k: usize,
    /// Columns of `out` (rows of `w`).
    pub n: usize,
}

/// Error unless every `(offset, len)` part lies inside a buffer of `words` words.
pub(crate) fn check_parts(op: &str, words: usize, parts: &[(usize, usize)]) -> Result<()> {
    match parts.iter().find(|&&(at, len)| at.checked_add(len).is_none_or(|end| end > words)) {
        None => Ok(()),
        Some((at, len)) => Err(Error::Backend(format!("{op}: words {at}..{} outside a buffer of {words}", at + len))),
    }
}

/// `process_logits`: output row `r` reads logits row `cond[r]` (and, with CFG, `uncond[r]`) and
/// writes probabilities row `dst[r]` and flag `flags_at + dst[r]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogitsMap {
    /// Rows processed.
    pub rows: usize,
    /// Vocabulary size (row width of logits and probabilities).
    pub vocab: usize,
    /// Whether the map carries unconditional rows (CFG).
    pub cfg: bool,
    /// Offset of `cond`, followed by `uncond` when `cfg`.
    pub map_at: usize,
    /// Offset of `dst`.
    pub dst_at: usize,
    /// Offset of the flags in the flags buffer (flag of row `dst[r]` at `flags_at + dst[r]`).
    pub flags_at: usize,
}

impl LogitsMap {
    /// Pack the row lists (`uncond` with CFG, of the same length as `cond` and `dst`).
    pub fn pack(packed: &mut Packed, vocab: usize, cond: &[u32], uncond: Option<&[u32]>, dst: &[u32], flags_at: usize) -> Result<Self> {
        if uncond.is_some_and(|u| u.len() != cond.len()) || dst.len() != cond.len() {
            return Err(Error::Backend(format!("process_logits: {} conditional rows, {:?} unconditional, {} destinations", cond.len(), uncond.map(<[u32]>::len), dst.len())));
        }
        let map_at = packed.push(cond);
        if let Some(u) = uncond {
            packed.push(u);
        }
        Ok(Self { rows: cond.len(), vocab, cfg: uncond.is_some(), map_at, dst_at: packed.push(dst), flags_at })
    }

    /// Words of the row map (`cond`, then `uncond` with CFG).
    pub fn map_len(&self) -> usize {
        self.rows * if self.cfg { 2 } else { 1 }
    }
}

/// `sample_children`: parent `i` draws `width` distinct tokens from probabilities row `rows[i]`
/// with the uniforms `uniforms[i * width + j]`, child `j` into `tokens[first[i] + j]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChildDraws {
    /// Parents drawing children.
    pub parents: usize,
    /// Children per parent.
    pub width: usize,
    /// Vocabulary size.
    pub vocab: usize,
    /// Offset of `rows`.
    pub rows_at: usize,
    /// Offset of `first`.
    pub first_at: usize,
    /// Offset of the uniforms (f32 bits in `[0, 1)`).
    pub uniforms_at: usize,
}

impl ChildDraws {
    /// Pack the lists (`uniforms` holds `rows.len() * width` values).
    pub fn pack(packed: &mut Packed, vocab: usize, width: usize, rows: &[u32], first: &[u32], uniforms: &[f32]) -> Result<Self> {
        if first.len() != rows.len() || uniforms.len() != rows.len() * width {
            return Err(Error::Backend(format!("sample_children: {} rows, {} first children, {} uniforms for width {width}", rows.len(), first.len(), uniforms.len())));
        }
        Ok(Self { parents: rows.len(), width, vocab, rows_at: packed.push(rows), first_at: packed.push(first), uniforms_at: packed.push_f32(uniforms) })
    }
}

/// `accept_block`: the draft block's inputs in the plan words, and where its drafted tokens and
/// decisions sit in the state words. Per sequence `b` of `batch`: `nodes` entries of parents
/// (i32 bits, -1 for children of the pending token; any other value that names no node makes
/// the node absent), acceptance uniforms and tokens; one final uniform; `nodes` relaxation
/// factors shared by the batch. Outputs: accepted length and next token per sequence, the
/// accepted path (i32 bits, -1 past its end) and acceptance probability (f32 bits, -1 if not
/// tried) per node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockLayout {
    /// Sequences.
    pub batch: usize,
    /// Node slots per sequence.
    pub nodes: usize,
    /// Vocabulary size.
    pub vocab: usize,
    /// Plan offset of the parents, `[batch, nodes]`.
    pub parents_at: usize,
    /// Plan offset of omega, `[nodes]`.
    pub omega_at: usize,
    /// Plan offset of the acceptance uniforms, `[batch, nodes]`.
    pub u_accept_at: usize,
    /// Plan offset of the final uniforms, `[batch]`.
    pub u_sample_at: usize,
    /// State offset of the drafted tokens, `[batch, nodes]`.
    pub tokens_at: usize,
    /// State offset of the accepted lengths, `[batch]`.
    pub accepted_at: usize,
    /// State offset of the next tokens, `[batch]`.
    pub next_at: usize,
    /// State offset of the accepted paths, `[batch, nodes]`.
    pub path_at: usize,
    /// State offset of the acceptance probabilities, `[batch, nodes]`.
    pub prob_at: usize,
}

/// The inputs of a draft block in the plan words (see [`BlockLayout::pack`]).
#[derive(Clone, Copy, Debug)]
pub struct BlockInputs<'a> {
    /// Sequences.
    pub batch: usize,
    /// Node slots per sequence.
    pub nodes: usize,
    /// Vocabulary size.
    pub vocab: usize,
    /// Parent of each node, `[batch, nodes]`.
    pub parents: &'a [i32],
    /// Relaxation factor per block depth, `[nodes]`.
    pub omega: &'a [f32],
    /// Acceptance uniforms, `[batch, nodes]`.
    pub u_accept: &'a [f32],
    /// Final uniforms, `[batch]`.
    pub u_sample: &'a [f32],
}

impl BlockLayout {
    /// Pack the inputs into the plan and place the outputs in the state words from `state_at`
    /// on, after the tokens at `tokens_at`. Returns the layout; the state needs
    /// [`Self::state_end`] words.
    pub fn pack(packed: &mut Packed, inputs: &BlockInputs<'_>, tokens_at: usize, state_at: usize) -> Result<Self> {
        let (batch, nodes) = (inputs.batch, inputs.nodes);
        let per_node = batch * nodes;
        if inputs.parents.len() != per_node || inputs.u_accept.len() != per_node || inputs.omega.len() != nodes || inputs.u_sample.len() != batch {
            return Err(Error::Backend(format!("accept_block: array lengths do not match {batch} sequences x {nodes} nodes")));
        }
        Ok(Self {
            batch,
            nodes,
            vocab: inputs.vocab,
            parents_at: packed.push_i32(inputs.parents),
            omega_at: packed.push_f32(inputs.omega),
            u_accept_at: packed.push_f32(inputs.u_accept),
            u_sample_at: packed.push_f32(inputs.u_sample),
            tokens_at,
            accepted_at: state_at,
            next_at: state_at + batch,
            path_at: state_at + 2 * batch,
            prob_at: state_at + 2 * batch + per_node,
        })
    }

    /// One past the last state word the block writes.
    pub fn state_end(&self) -> usize {
        self.prob_at + self.batch * self.nodes
    }

    /// Check the offsets against a plan of `plan_len` and a state of `state_len` words, and the
    /// distributions' lengths.
    pub(crate) fn check(&self, plan_len: usize, state_len: usize, p_len: usize, q_len: usize) -> Result<()> {
        let (b, n) = (self.batch, self.nodes);
        check_parts("accept_block plan", plan_len, &[(self.parents_at, b * n), (self.omega_at, n), (self.u_accept_at, b * n), (self.u_sample_at, b)])?;
        check_parts("accept_block state", state_len, &[(self.tokens_at, b * n), (self.accepted_at, b), (self.next_at, b), (self.path_at, b * n), (self.prob_at, b * n)])?;
        let dist = b * (n + 1) * self.vocab;
        if p_len < dist || q_len < dist || self.vocab == 0 || self.vocab > i32::MAX as usize {
            return Err(Error::Backend(format!("accept_block: p {p_len} and q {q_len} values for {b} x {} slots of vocab {}", n + 1, self.vocab)));
        }
        Ok(())
    }
}

/// `gather_rows`: `rows` row indices at word offset `at`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowGather {
    /// Rows gathered.
    pub rows: usize,
    /// Offset of the row indices.
    pub at: usize,
}

impl RowGather {
    /// Pack the row indices.
    pub fn pack(packed: &mut Packed, rows: &[u32]) -> Self {
        Self { rows: rows.len(), at: packed.push(rows) }
    }
}

/// `kv_copy`: `pairs` independent slot copies `src[i] -> dst[i]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CopyList {
    /// Copies.
    pub pairs: usize,
    /// Offset of the source slots.
    pub src_at: usize,
    /// Offset of the destination slots.
    pub dst_at: usize,
}

impl CopyList {
    /// Pack one batch of independent copies (see [`crate::backend::independent_batches`]).
    pub fn pack(packed: &mut Packed, src: &[u32], dst: &[u32]) -> Self {
        Self { pairs: src.len().min(dst.len()), src_at: packed.push(src), dst_at: packed.push(dst) }
    }
}
