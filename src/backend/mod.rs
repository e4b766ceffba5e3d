//! The backend trait: every op a LlamaGen transformer step and a speculative decoding step need,
//! on some device.
//!
//! Model code (`crate::model`) is written once against [`Backend`]; the CPU backend is the
//! reference every other backend is tested against. Activations are f32 buffers ([`Backend::Buf`]);
//! weights live in the backend's own format ([`Backend::Weight`]); the paged KV pool
//! ([`Backend::KvPool`]) holds keys and values for all layers; [`Backend::Words`] are u32 arrays
//! on the device (index lists, drafted tokens, the decisions of a step). The positions, KV slots
//! and attention layout of a forward pass form one [`ForwardPlan`]; every index array of a whole
//! decoding step (its forwards' plans, logits maps, draws, acceptance inputs, KV copies) is packed
//! into one [`Packed`] buffer and uploaded once, and the ops read their parts at word offsets
//! ([`ops`]). Ops that read indices from device memory check them in the kernel (an index out of
//! range writes nothing, or a zero row), so a bad plan can never touch memory outside a buffer.
//! Activation buffers can be resized in place ([`Backend::resize`]), so a model allocates its
//! workspace once. The kernel backend
//! ([`GpuBackend`]) runs `kernels/*.cu` on a CUDA GPU (`CudaBackend`, feature `cuda`) or on the
//! CUDA emulator ([`EmuBackend`], feature `emulator`, default).

mod accept;
mod activation;
pub mod checks;
mod copies;
pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
#[cfg(feature = "emulator")]
pub mod emu;
pub mod gpu;
mod layout;
pub mod ops;
mod packed;
mod plan;

use std::sync::Arc;

pub use accept::{accept_on_host, Acceptance, DraftBlock};
pub use activation::Activation;
pub use copies::independent_batches;
pub use cpu::CpuBackend;
#[cfg(feature = "cuda")]
pub use cuda::CudaBackend;
#[cfg(feature = "emulator")]
pub use emu::EmuBackend;
pub use gpu::GpuBackend;
pub use layout::AttentionLayout;
pub use ops::{BlockInputs, BlockLayout, ChildDraws, CopyList, GemmShape, LogitsMap, RmsNorm, RowGather, NO_TOKEN};
pub use packed::Packed;
pub use plan::{ForwardPlan, Gather, PlanOffsets};

use crate::error::Result;
use crate::sampling::SamplingParams;
use crate::weights::WeightFile;

/// What the backend has asked of its device since it was created (or since the last
/// [`Backend::take_device_counts`]): the numbers the decode-step budget is checked against.
/// Host launch calls are `launches - graphed + graph_launches` ([`DeviceCounts::host_launches`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceCounts {
    /// Kernels run (GEMMs included), launched one by one or inside a replayed graph.
    pub launches: u64,
    /// Graph replays (one host launch each).
    pub graph_launches: u64,
    /// Of `launches`, those run inside replayed graphs.
    pub graphed: u64,
    /// Host-to-device copies.
    pub uploads: u64,
    /// Device-to-host copies.
    pub downloads: u64,
    /// Device allocations.
    pub allocations: u64,
}

impl DeviceCounts {
    /// Launch calls the host made: kernels launched one by one plus graph replays.
    pub fn host_launches(&self) -> u64 {
        self.launches - self.graphed + self.graph_launches
    }
}

/// The element type of a KV pool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum KvDtype {
    /// f32 (the CPU reference's, and the default).
    #[default]
    F32,
    /// bfloat16, rounded to nearest even on append: half the bytes attention reads; on the CPU
    /// the values are rounded the same way and kept in f32, so both backends compute alike.
    Bf16,
}

impl std::str::FromStr for KvDtype {
    type Err = crate::error::Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f32" => Ok(KvDtype::F32),
            "bf16" => Ok(KvDtype::Bf16),
            other => Err(crate::error::Error::InvalidRequest(format!("unknown KV dtype `{other}`: use f32 or bf16"))),
        }
    }
}

/// Geometry of a paged KV pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvShape {
    /// Decoder layers.
    pub n_layer: usize,
    /// Blocks in the pool.
    pub num_blocks: usize,
    /// Token slots per block.
    pub block_size: usize,
    /// Attention heads.
    pub n_head: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Element type.
    pub dtype: KvDtype,
}

impl KvShape {
    /// Width of one token's keys (or values) in one layer.
    pub fn row_width(&self) -> usize {
        self.n_head * self.head_dim
    }

    /// Token slots in the pool.
    pub fn num_slots(&self) -> usize {
        self.num_blocks * self.block_size
    }
}

/// A compute device with the ops of a LlamaGen decoder step.
///
/// Shapes are passed explicitly; buffers are row-major. "Rows" are the tokens of one forward
/// pass (all sequences of a batch concatenated).
pub trait Backend: Send + Sync {
    /// An f32 activation buffer on the device.
    type Buf: Send + Sync;
    /// A weight tensor on the device.
    type Weight: Send + Sync;
    /// Keys and values of every layer, in fixed-size blocks of token slots.
    type KvPool: Send + Sync;
    /// A [`ForwardPlan`] in the form the ops read it (on a device: a view of an uploaded
    /// [`Backend::Words`] buffer).
    type Plan: Send + Sync;
    /// A u32 array on the device (index lists, drafted tokens, a step's decisions).
    type Words: Send + Sync;

    /// A short human-readable name ("cpu", "cuda:0 (H100)").
    fn name(&self) -> String;

    /// Load tensor `name` of `file`, checking its shape; zero-copy where the device and dtype
    /// allow.
    fn load_weight(&self, file: &Arc<WeightFile>, name: &str, shape: &[usize]) -> Result<Self::Weight>;
    /// A weight from host f32 values (synthetic or derived tensors).
    fn weight_from_host(&self, values: &[f32]) -> Result<Self::Weight>;

    /// A zero-filled buffer of `len` f32.
    fn zeros(&self, len: usize) -> Result<Self::Buf>;
    /// A buffer holding a copy of `values`.
    fn upload(&self, values: &[f32]) -> Result<Self::Buf>;
    /// Copy `values` into `buf`, resized to hold them (reusing its memory when large enough).
    fn upload_into(&self, buf: &mut Self::Buf, values: &[f32]) -> Result<()>;
    /// Copy a buffer back to the host.
    fn download(&self, buf: &Self::Buf) -> Result<Vec<f32>>;
    /// Make `buf` hold `len` elements, reusing its memory when it is large enough (contents
    /// unspecified afterwards): the workspace of a forward pass is allocated once this way.
    fn resize(&self, buf: &mut Self::Buf, len: usize) -> Result<()>;
    /// `len` zeroed words.
    fn words(&self, len: usize) -> Result<Self::Words>;
    /// Copy `values` into `buf`, resized to hold them (reusing its memory when large enough):
    /// one host-to-device copy.
    fn upload_words_into(&self, buf: &mut Self::Words, values: &[u32]) -> Result<()>;
    /// Copy words back to the host (one device-to-host copy).
    fn download_words(&self, buf: &Self::Words) -> Result<Vec<u32>>;
    /// Make `buf` hold `len` words, reusing its memory when it is large enough (contents
    /// unspecified afterwards).
    fn resize_words(&self, buf: &mut Self::Words, len: usize) -> Result<()>;
    /// The plan of one forward pass as the ops read it, from `plan` packed at `at` into the
    /// uploaded `words` (no copy; the plan is checked against the pool's geometry by each op).
    fn plan_in(&self, words: &Arc<Self::Words>, plan: ForwardPlan, at: PlanOffsets) -> Result<Self::Plan>;
    /// Hand `plan` to the device on its own (one allocation and one copy on a device): for a
    /// single forward; a decoding step packs all its plans into one upload instead.
    fn upload_plan(&self, plan: ForwardPlan) -> Result<Self::Plan> {
        let mut packed = Packed::default();
        let at = plan.pack(&mut packed);
        let mut words = self.words(0)?;
        self.upload_words_into(&mut words, packed.words())?;
        self.plan_in(&Arc::new(words), plan, at)
    }
    /// An empty (zeroed) KV pool.
    fn kv_pool(&self, shape: KvShape) -> Result<Self::KvPool>;

    /// `out[rows[i]] = table[ids[i]]` for rows of width `dim`, with `ids` and `rows` those of
    /// gather `gather` of the plan. An indirect gather ([`Gather::indirect`]) reads its ids from
    /// `tokens` (`ids[i] = tokens[gather.ids[i]]`, drafted on the device); an index outside
    /// `tokens` or an id outside the table gives a zero row.
    fn embedding(&self, table: &Self::Weight, plan: &Self::Plan, gather: usize, tokens: Option<&Self::Words>, dim: usize, out: &mut Self::Buf) -> Result<()>;
    /// `out[i] = src[rows[i]]` for `gather.rows` rows of width `width`, the row indices read from
    /// `words` at `gather.at` (a row outside `src` gives a zero row).
    fn gather_rows(&self, src: &Self::Buf, width: usize, words: &Self::Words, gather: RowGather, out: &mut Self::Buf) -> Result<()>;
    /// `out = concat(a, b)` per row: `a` rows of width `a_dim`, `b` rows of width `b_dim`.
    fn concat_rows(&self, a: &Self::Buf, a_dim: usize, b: &Self::Buf, b_dim: usize, out: &mut Self::Buf) -> Result<()>;
    /// RMSNorm of each row of width `dim`: `out = x / sqrt(mean(x^2) + eps) * weight`.
    fn rms_norm(&self, x: &Self::Buf, weight: &Self::Weight, eps: f32, dim: usize, out: &mut Self::Buf) -> Result<()>;
    /// `acc += x` elementwise.
    fn add_assign(&self, acc: &mut Self::Buf, x: &Self::Buf) -> Result<()>;
    /// `out[rows, out_dim] = x[rows, in_dim] · weightᵀ` for a PyTorch-layout `[out_dim, in_dim]` weight.
    fn linear(&self, x: &Self::Buf, weight: &Self::Weight, rows: usize, in_dim: usize, out_dim: usize, out: &mut Self::Buf) -> Result<()>;
    /// `out = silu(gate) * up` elementwise (SwiGLU).
    fn swiglu(&self, gate: &Self::Buf, up: &Self::Buf, out: &mut Self::Buf) -> Result<()>;
    /// `out = silu(n · gateᵀ) * (n · upᵀ)` with `n = rms_norm(x)` (`norm`, over rows of
    /// `shape.k`): a decoder layer's feed-forward norm and the first half of its SwiGLU
    /// feed-forward, for two `[out_dim, in_dim]` weights. Kernel backends fold the norm into one
    /// fused GEMM launch where the shape allows; the provided form runs `rms_norm` into `normed`,
    /// two `linear`s into the scratch buffers `gate_out` and `up_out` (each `[rows, out_dim]`)
    /// and `swiglu`.
    #[allow(clippy::too_many_arguments)]
    fn norm_linear_swiglu(
        &self,
        x: &Self::Buf,
        norm: RmsNorm<'_, Self::Weight>,
        [gate, up]: [&Self::Weight; 2],
        shape: GemmShape,
        normed: &mut Self::Buf,
        [gate_out, up_out]: [&mut Self::Buf; 2],
        out: &mut Self::Buf,
    ) -> Result<()> {
        unfused_norm_linear_swiglu(self, x, norm, [gate, up], shape, normed, [gate_out, up_out], out)
    }
    /// `acc += x · weightᵀ`: a projection added into the residual stream. Kernel backends fuse
    /// the add into the GEMM's epilogue where the shape allows; the provided form runs `linear`
    /// into the scratch buffer `projected` (`[rows, out_dim]`) and `add_assign`.
    fn linear_add(&self, x: &Self::Buf, weight: &Self::Weight, shape: GemmShape, projected: &mut Self::Buf, acc: &mut Self::Buf) -> Result<()> {
        unfused_linear_add(self, x, weight, shape, projected, acc)
    }
    /// Rotate, in place, the first `n_rot_heads` heads of width `head_dim` of each row (row
    /// stride `row_stride`) by the RoPE table row `plan.positions[r]`. `table` holds, per position,
    /// `head_dim / 2` (cos, sin) pairs applied to interleaved pairs `(x[2k], x[2k+1])`.
    #[allow(clippy::too_many_arguments)]
    fn rope(
        &self,
        x: &mut Self::Buf,
        rows: usize,
        row_stride: usize,
        n_rot_heads: usize,
        head_dim: usize,
        table: &Self::Buf,
        plan: &Self::Plan,
    ) -> Result<()>;
    /// Write the K and V parts of fused `qkv` rows (`[rows, 3 * width]`, order q|k|v) of layer
    /// `layer` into pool slots `plan.slots[r]`.
    fn kv_write(&self, pool: &mut Self::KvPool, layer: usize, qkv: &Self::Buf, plan: &Self::Plan) -> Result<()>;
    /// `rope` on the q and k heads of fused `qkv` rows (`n_head` heads of `head_dim` each), then
    /// `kv_write` of the rotated keys and the values. Kernel backends do it in one launch that
    /// reads each row once; the provided form runs the two ops.
    #[allow(clippy::too_many_arguments)]
    fn rope_kv_write(&self, qkv: &mut Self::Buf, rows: usize, n_head: usize, head_dim: usize, table: &Self::Buf, pool: &mut Self::KvPool, layer: usize, plan: &Self::Plan) -> Result<()> {
        let width = n_head * head_dim;
        self.rope(qkv, rows, 3 * width, 2 * n_head, head_dim, table, plan)?;
        self.kv_write(pool, layer, qkv, plan)
    }
    /// A decoder layer's attention prologue: `qkv = rms_norm(x) · wqkvᵀ` (`norm`; `rows` rows of
    /// `n_head * head_dim`), RoPE on its q and k heads by the table rows `plan.positions`, and the
    /// rotated keys and the values appended to layer `layer` of `pool` at `plan.slots`. Kernel
    /// backends do it in one fused GEMM launch where the shape allows; the provided form runs
    /// `rms_norm` into `normed`, `linear` and [`Self::rope_kv_write`].
    #[allow(clippy::too_many_arguments)]
    fn norm_qkv_rope_kv_write(
        &self,
        x: &Self::Buf,
        norm: RmsNorm<'_, Self::Weight>,
        wqkv: &Self::Weight,
        (rows, n_head, head_dim): (usize, usize, usize),
        table: &Self::Buf,
        (pool, layer): (&mut Self::KvPool, usize),
        plan: &Self::Plan,
        normed: &mut Self::Buf,
        qkv: &mut Self::Buf,
    ) -> Result<()> {
        unfused_norm_qkv_rope_kv_write(self, x, norm, wqkv, (rows, n_head, head_dim), table, (pool, layer), plan, normed, qkv)
    }
    /// Copy keys and values of every layer from pool slot `src[i]` to slot `dst[i]`, the slot
    /// lists read from `words`; the copies must be independent (no slot both read and written:
    /// [`independent_batches`]); a slot outside the pool is skipped.
    fn kv_copy(&self, pool: &mut Self::KvPool, words: &Self::Words, copies: CopyList) -> Result<()>;
    /// Copy slot `src[i]` to slot `dst[i]` in order, from host lists (one upload; for forks and
    /// tests; a decoding step packs its copies into its plan instead).
    fn kv_copy_host(&self, pool: &mut Self::KvPool, src: &[u32], dst: &[u32]) -> Result<()> {
        checks::kv_copy(&self.kv_shape(pool), src, dst)?;
        let mut packed = Packed::default();
        let lists: Vec<CopyList> = independent_batches(src, dst).iter().map(|(s, d)| CopyList::pack(&mut packed, s, d)).collect();
        if lists.is_empty() {
            return Ok(());
        }
        let mut words = self.words(0)?;
        self.upload_words_into(&mut words, packed.words())?;
        lists.into_iter().try_for_each(|list| self.kv_copy(pool, &words, list))
    }
    /// The geometry of `pool`.
    fn kv_shape(&self, pool: &Self::KvPool) -> KvShape;
    /// Scaled dot-product attention of the q part of `qkv` against layer `layer` of the paged
    /// pool, with per-query visibility from `plan.layout` (causal, or a token-tree mask);
    /// `out` is `[rows, n_head * head_dim]`.
    fn attention(&self, qkv: &Self::Buf, pool: &Self::KvPool, layer: usize, plan: &Self::Plan, out: &mut Self::Buf) -> Result<()>;
    /// Turn logits into the distributions tokens are drawn from (CFG mix, temperature, top-k,
    /// softmax, top-p: `SamplingParams::distribution`) for the rows `map` names, writing
    /// `probs` rows and a flag per row into `flags` (1: non-finite logits, the row is NaN); one
    /// launch of kernels/sampling.cu on a device, its exact twin on the CPU.
    fn process_logits(&self, logits: &Self::Buf, words: &Self::Words, map: LogitsMap, params: &SamplingParams, probs: &mut Self::Buf, flags: &mut Self::Words) -> Result<()>;
    /// Draw the children of draft-tree nodes from their distributions in `probs`, without
    /// replacement, into `tokens` (one launch for a whole tree level and batch; an
    /// [`NO_TOKEN`] where a distribution's support runs out).
    fn sample_children(&self, probs: &Self::Buf, words: &Self::Words, draws: ChildDraws, tokens: &mut Self::Words) -> Result<()>;
    /// Verify a whole draft block (chain or tree, every sequence of a batch) against target
    /// probabilities `p` and draft probabilities `q` (both `[batch, nodes + 1, vocab]`), as the
    /// fused kernel `kernels/accept.cu` does (one launch on a device, its exact twin on the
    /// CPU): inputs from `plan` and the drafted tokens of `state`, decisions written into
    /// `state` ([`BlockLayout`]).
    fn accept_block(&self, p: &Self::Buf, q: &Self::Buf, plan: &Self::Words, block: &BlockLayout, state: &mut Self::Words) -> Result<()>;
    /// Run `work` (a fixed-shape region of device work, such as one pass of a decoding step) as
    /// a graph where the device has them: kernel backends replay a region seen before as one
    /// captured graph (see `backend::gpu` `graphs.rs`); the default runs it as is.
    fn graphed(&self, work: &mut dyn FnMut() -> Result<()>) -> Result<()> {
        work()
    }
    /// The device operations since the last call (or since creation), resetting the counts:
    /// kernel backends count launches, copies and allocations; the CPU backend has none (`None`).
    fn take_device_counts(&self) -> Option<DeviceCounts> {
        None
    }

    // Ops of the continuous-token models (MAR transformer, DiffLoss head). They have CPU
    // implementations only so far; on another device they return an error naming the op.

    /// LayerNorm of each row of width `dim` (biased variance): `out = (x - mean) / sqrt(var +
    /// eps)`, then `* weight + bias` when `affine` is `Some((weight, bias))`.
    fn layer_norm(&self, x: &Self::Buf, affine: Option<(&Self::Weight, &Self::Weight)>, eps: f32, dim: usize, out: &mut Self::Buf) -> Result<()> {
        let _ = (x, affine, eps, dim, out);
        Err(no_kernel("layer_norm", self.name()))
    }
    /// `x[r] += bias` for every row `r` of width `width` (the bias of a PyTorch `nn.Linear`).
    fn add_bias(&self, x: &mut Self::Buf, bias: &Self::Weight, width: usize) -> Result<()> {
        let _ = (x, bias, width);
        Err(no_kernel("add_bias", self.name()))
    }
    /// Apply `activation` to every element of `x`, in place.
    fn activate(&self, x: &mut Self::Buf, activation: Activation) -> Result<()> {
        let _ = x;
        Err(no_kernel(activation.name(), self.name()))
    }
    /// Unmasked (bidirectional) attention within each group of `seq_len` consecutive rows of
    /// fused `qkv` (`[rows, 3 * width]`, order q|k|v, `n_head` heads of `head_dim`, scale
    /// `head_dim^-1/2`): every row attends to every row of its group. `out` is `[rows, width]`.
    fn dense_attention(&self, qkv: &Self::Buf, seq_len: usize, n_head: usize, head_dim: usize, out: &mut Self::Buf) -> Result<()> {
        let _ = (qkv, seq_len, n_head, head_dim, out);
        Err(no_kernel("dense_attention", self.name()))
    }
    /// [`Self::dense_attention`] over consecutive groups of rows of the lengths `seq_lens` (one
    /// pass over sequences of different lengths, e.g. MAR encoders whose masks differ): every
    /// row attends to every row of its group and to no other.
    fn ragged_attention(&self, qkv: &Self::Buf, seq_lens: &[usize], n_head: usize, head_dim: usize, out: &mut Self::Buf) -> Result<()> {
        let _ = (qkv, seq_lens, n_head, head_dim, out);
        Err(no_kernel("ragged_attention", self.name()))
    }
    /// AdaLN modulation of rows of width `dim`: `x = x * (1 + scale) + shift`, with `shift` and
    /// `scale` the columns `at..at + dim` and `at + dim..at + 2 * dim` of the same row of
    /// `mods` (rows of width `mods_width`).
    fn modulate(&self, x: &mut Self::Buf, mods: &Self::Buf, mods_width: usize, at: usize, dim: usize) -> Result<()> {
        let _ = (x, mods, mods_width, at, dim);
        Err(no_kernel("modulate", self.name()))
    }
    /// Gated residual of AdaLN blocks: `acc += gate * x` for rows of width `dim`, with `gate`
    /// the columns `at..at + dim` of the same row of `mods` (rows of width `mods_width`).
    fn add_gated(&self, acc: &mut Self::Buf, x: &Self::Buf, mods: &Self::Buf, mods_width: usize, at: usize, dim: usize) -> Result<()> {
        let _ = (acc, x, mods, mods_width, at, dim);
        Err(no_kernel("add_gated", self.name()))
    }
}

/// The error of an op a backend has no kernel for.
fn no_kernel(op: &str, device: String) -> crate::error::Error {
    crate::error::Error::Backend(format!("{op} has no kernel on {device} yet (the continuous-token ops run on the CPU backend)"))
}

/// [`Backend::norm_linear_swiglu`] as its composition: `rms_norm` into `normed`, two `linear`s
/// and `swiglu`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn unfused_norm_linear_swiglu<B: Backend + ?Sized>(
    backend: &B,
    x: &B::Buf,
    norm: RmsNorm<'_, B::Weight>,
    [gate, up]: [&B::Weight; 2],
    shape: GemmShape,
    normed: &mut B::Buf,
    [gate_out, up_out]: [&mut B::Buf; 2],
    out: &mut B::Buf,
) -> Result<()> {
    backend.rms_norm(x, norm.weight, norm.eps, shape.k, normed)?;
    backend.linear(normed, gate, shape.rows, shape.k, shape.n, gate_out)?;
    backend.linear(normed, up, shape.rows, shape.k, shape.n, up_out)?;
    backend.swiglu(gate_out, up_out, out)
}

/// [`Backend::norm_qkv_rope_kv_write`] as its composition: `rms_norm` into `normed`, `linear`
/// and `rope_kv_write`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn unfused_norm_qkv_rope_kv_write<B: Backend + ?Sized>(
    backend: &B,
    x: &B::Buf,
    norm: RmsNorm<'_, B::Weight>,
    wqkv: &B::Weight,
    (rows, n_head, head_dim): (usize, usize, usize),
    table: &B::Buf,
    (pool, layer): (&mut B::KvPool, usize),
    plan: &B::Plan,
    normed: &mut B::Buf,
    qkv: &mut B::Buf,
) -> Result<()> {
    let width = n_head * head_dim;
    backend.rms_norm(x, norm.weight, norm.eps, width, normed)?;
    backend.linear(normed, wqkv, rows, width, 3 * width, qkv)?;
    backend.rope_kv_write(qkv, rows, n_head, head_dim, table, pool, layer, plan)
}

/// [`Backend::linear_add`] as a `linear` into `projected` and an `add_assign`.
pub(crate) fn unfused_linear_add<B: Backend + ?Sized>(backend: &B, x: &B::Buf, weight: &B::Weight, shape: GemmShape, projected: &mut B::Buf, acc: &mut B::Buf) -> Result<()> {
    backend.linear(x, weight, shape.rows, shape.k, shape.n, projected)?;
    backend.add_assign(acc, projected)
}
