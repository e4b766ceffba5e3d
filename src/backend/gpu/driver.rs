//! What a device must provide to run spire's kernels: memory, copies, kernel launches and a GEMM.
//! [`super::GpuBackend`] writes every [`crate::backend::Backend`] op once over this trait; the CUDA
//! driver (`backend::cuda`, cudarc + cuBLAS) and the emulator (`backend::emu`, the same kernel
//! sources compiled for the host, CPU GEMM) implement it, so the emulator runs exactly the launch
//! code a GPU runs.

use crate::error::Result;
pub use crate::backend::ops::GemmShape;

/// Every kernel of `kernels/*.cu`, by its `extern "C"` name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// `norm.cu` `rms_norm`.
    RmsNorm,
    /// `rope.cu` `rope`.
    Rope,
    /// `rope.cu` `rope_kv_write_f32`.
    RopeKvWriteF32,
    /// `rope.cu` `rope_kv_write_bf16`.
    RopeKvWriteBf16,
    /// `kv_cache.cu` `kv_write_f32`.
    KvWriteF32,
    /// `kv_cache.cu` `kv_write_bf16`.
    KvWriteBf16,
    /// `kv_cache.cu` `kv_copy_f32`.
    KvCopyF32,
    /// `kv_cache.cu` `kv_copy_bf16`.
    KvCopyBf16,
    /// `attention.cu` `paged_attention_f32`.
    PagedAttentionF32,
    /// `attention.cu` `paged_attention_bf16`.
    PagedAttentionBf16,
    /// `swiglu.cu` `swiglu`.
    Swiglu,
    /// `elementwise.cu` `add_assign`.
    AddAssign,
    /// `elementwise.cu` `concat_rows`.
    ConcatRows,
    /// `elementwise.cu` `f32_to_bf16`.
    F32ToBf16,
    /// `elementwise.cu` `gather_rows`.
    GatherRows,
    /// `embedding.cu` `embedding_f32`.
    EmbeddingF32,
    /// `embedding.cu` `embedding_bf16`.
    EmbeddingBf16,
    /// `gemv.cu` `gemm_skinny_bf16`.
    GemmSkinnyBf16,
    /// `gemv.cu` `gemm_skinny_add_bf16`.
    GemmSkinnyAddBf16,
    /// `gemv.cu` `gemm_skinny_norm_swiglu_bf16`.
    GemmSkinnyNormSwigluBf16,
    /// `gemv.cu` `gemm_skinny_norm_qkv_rope_kv_f32`.
    GemmSkinnyNormQkvRopeKvF32,
    /// `gemv.cu` `gemm_skinny_norm_qkv_rope_kv_bf16`.
    GemmSkinnyNormQkvRopeKvBf16,
    /// `accept.cu` `accept_block`.
    AcceptBlock,
    /// `accept.cu` `sample_children`.
    SampleChildren,
    /// `sampling.cu` `process_logits`.
    ProcessLogits,
}

impl Kernel {
    /// Every kernel, in a fixed order (`Kernel as usize` indexes it).
    pub const ALL: [Kernel; 25] = [
        Kernel::RmsNorm,
        Kernel::Rope,
        Kernel::RopeKvWriteF32,
        Kernel::RopeKvWriteBf16,
        Kernel::KvWriteF32,
        Kernel::KvWriteBf16,
        Kernel::KvCopyF32,
        Kernel::KvCopyBf16,
        Kernel::PagedAttentionF32,
        Kernel::PagedAttentionBf16,
        Kernel::Swiglu,
        Kernel::AddAssign,
        Kernel::ConcatRows,
        Kernel::F32ToBf16,
        Kernel::GatherRows,
        Kernel::EmbeddingF32,
        Kernel::EmbeddingBf16,
        Kernel::GemmSkinnyBf16,
        Kernel::GemmSkinnyAddBf16,
        Kernel::GemmSkinnyNormSwigluBf16,
        Kernel::GemmSkinnyNormQkvRopeKvF32,
        Kernel::GemmSkinnyNormQkvRopeKvBf16,
        Kernel::AcceptBlock,
        Kernel::SampleChildren,
        Kernel::ProcessLogits,
    ];

    /// The kernel's `extern "C"` name.
    pub fn name(self) -> &'static str {
        self.names().1
    }

    /// The module (`kernels/<module>.cu`) that defines it.
    pub fn module(self) -> &'static str {
        self.names().0
    }

    fn names(self) -> (&'static str, &'static str) {
        match self {
            Kernel::RmsNorm => ("norm", "rms_norm"),
            Kernel::Rope => ("rope", "rope"),
            Kernel::RopeKvWriteF32 => ("rope", "rope_kv_write_f32"),
            Kernel::RopeKvWriteBf16 => ("rope", "rope_kv_write_bf16"),
            Kernel::KvWriteF32 => ("kv_cache", "kv_write_f32"),
            Kernel::KvWriteBf16 => ("kv_cache", "kv_write_bf16"),
            Kernel::KvCopyF32 => ("kv_cache", "kv_copy_f32"),
            Kernel::KvCopyBf16 => ("kv_cache", "kv_copy_bf16"),
            Kernel::PagedAttentionF32 => ("attention", "paged_attention_f32"),
            Kernel::PagedAttentionBf16 => ("attention", "paged_attention_bf16"),
            Kernel::Swiglu => ("swiglu", "swiglu"),
            Kernel::AddAssign => ("elementwise", "add_assign"),
            Kernel::ConcatRows => ("elementwise", "concat_rows"),
            Kernel::F32ToBf16 => ("elementwise", "f32_to_bf16"),
            Kernel::GatherRows => ("elementwise", "gather_rows"),
            Kernel::EmbeddingF32 => ("embedding", "embedding_f32"),
            Kernel::EmbeddingBf16 => ("embedding", "embedding_bf16"),
            Kernel::GemmSkinnyBf16 => ("gemv", "gemm_skinny_bf16"),
            Kernel::GemmSkinnyAddBf16 => ("gemv", "gemm_skinny_add_bf16"),
            Kernel::GemmSkinnyNormSwigluBf16 => ("gemv", "gemm_skinny_norm_swiglu_bf16"),
            Kernel::GemmSkinnyNormQkvRopeKvF32 => ("gemv", "gemm_skinny_norm_qkv_rope_kv_f32"),
            Kernel::GemmSkinnyNormQkvRopeKvBf16 => ("gemv", "gemm_skinny_norm_qkv_rope_kv_bf16"),
            Kernel::AcceptBlock => ("accept", "accept_block"),
            Kernel::SampleChildren => ("accept", "sample_children"),
            Kernel::ProcessLogits => ("sampling", "process_logits"),
        }
    }
}

/// One kernel parameter, passed by value as `cuLaunchKernel` takes it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum KernelArg {
    /// A device address (`T*` in the kernel).
    Ptr(u64),
    /// `int`.
    I32(i32),
    /// `unsigned long long`.
    U64(u64),
    /// `float`.
    F32(f32),
}

impl KernelArg {
    /// The value in the low bytes of a little-endian 8-byte slot, which is how both drivers hand
    /// it to the kernel (a pointer to the slot per parameter).
    pub fn slot(self) -> u64 {
        match self {
            KernelArg::Ptr(v) | KernelArg::U64(v) => v,
            KernelArg::I32(v) => u64::from(v as u32),
            KernelArg::F32(v) => u64::from(v.to_bits()),
        }
    }
}

/// A kernel launch: geometry, dynamic shared memory and the parameter list.
#[derive(Clone, Debug, PartialEq)]
pub struct Launch {
    /// Blocks in x, y, z.
    pub grid: [u32; 3],
    /// Threads per block in x, y, z.
    pub block: [u32; 3],
    /// Dynamic shared memory per block, in bytes.
    pub shared_bytes: u32,
    /// The kernel's parameters, in the order of its C signature.
    pub args: Vec<KernelArg>,
}

impl Launch {
    /// True when the grid has no block (nothing to launch).
    pub fn is_empty(&self) -> bool {
        self.grid.contains(&0)
    }
}

/// The precision of a GEMM's inputs (the output and accumulation are always f32).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GemmInputs {
    /// f32 `x` and weight, f32 math (no TF32).
    F32,
    /// bf16 `x` and weight (u16 bit patterns).
    Bf16,
}

/// A GEMM on device addresses: `out = x · wᵀ` with `x`, `w` of `inputs` type and an f32 `out`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GemmWork {
    /// The inputs' precision.
    pub inputs: GemmInputs,
    /// The shape.
    pub shape: GemmShape,
    /// Address of `x`.
    pub x: u64,
    /// Address of `w`.
    pub w: u64,
    /// Address of `out`.
    pub out: u64,
    /// `out += x · wᵀ` (cuBLAS's beta = 1) instead of `out = x · wᵀ`.
    pub accumulate: bool,
}

/// One piece of device work, as a graph holds it: a kernel launch or a GEMM.
#[derive(Clone, Debug, PartialEq)]
pub enum Work {
    /// A kernel launch.
    Launch(Kernel, Launch),
    /// A GEMM.
    Gemm(GemmWork),
}

impl Work {
    /// Append the words that identify this work exactly (every parameter) to `key`.
    pub fn key_into(&self, key: &mut Vec<u64>) {
        match self {
            Work::Launch(kernel, launch) => {
                key.extend([0, *kernel as u64, u64::from(launch.shared_bytes), launch.args.len() as u64]);
                key.extend(launch.grid.iter().chain(&launch.block).map(|&d| u64::from(d)));
                key.extend(launch.args.iter().map(|a| a.slot()));
            }
            Work::Gemm(g) => {
                let inputs = match g.inputs {
                    GemmInputs::F32 => 0,
                    GemmInputs::Bf16 => 1,
                };
                key.extend([1, inputs, g.shape.rows as u64, g.shape.k as u64, g.shape.n as u64, g.x, g.w, g.out, u64::from(g.accumulate)]);
            }
        }
    }
}

/// A device that runs spire's kernels. Memory is untyped bytes ([`Driver::Mem`]); the typed
/// views live in [`super::DevVec`]. Work can also be captured once into a graph and replayed
/// ([`Driver::capture`], [`Driver::replay`]: a CUDA graph on a GPU).
pub trait Driver: Send + Sync + Sized + 'static {
    /// One device allocation.
    type Mem: Send + Sync;
    /// Captured work, replayable as one unit.
    type Graph: Send + Sync;

    /// A short description of the device ("cuda:0 (NVIDIA H100 ...)").
    fn describe(&self) -> String;
    /// A zero-filled allocation of `bytes` bytes (at least one byte is allocated).
    fn alloc_zeroed(&self, bytes: usize) -> Result<Self::Mem>;
    /// Copy `bytes` from the host into the start of `mem`.
    fn write(&self, mem: &mut Self::Mem, bytes: &[u8]) -> Result<()>;
    /// Copy the first `out.len()` bytes of `mem` to the host.
    fn read(&self, mem: &Self::Mem, out: &mut [u8]) -> Result<()>;
    /// The device address of `mem`, for kernels that only read it.
    fn address(&self, mem: &Self::Mem) -> u64;
    /// The device address of `mem`, for kernels that write it.
    fn address_mut(&self, mem: &mut Self::Mem) -> u64;
    /// Queue (or run) `kernel` with `launch`; an empty grid launches nothing.
    ///
    /// # Safety
    /// The parameters must match the kernel's C signature, and every address must stay valid and
    /// cover what the kernel reads or writes with this geometry.
    unsafe fn launch(&self, kernel: Kernel, launch: &Launch) -> Result<()>;
    /// Queue (or run) the GEMM `gemm`.
    ///
    /// # Safety
    /// The addresses must be live allocations holding the shape's operands.
    unsafe fn gemm(&self, gemm: &GemmWork) -> Result<()>;
    /// Capture `work`, in order, as one graph; nothing runs.
    ///
    /// # Safety
    /// As [`Driver::launch`] and [`Driver::gemm`] for every piece, at every replay.
    unsafe fn capture(&self, work: &[Work]) -> Result<Self::Graph>;
    /// Queue (or run) a captured graph.
    ///
    /// # Safety
    /// Every address the graph captured must still be a live allocation covering its use.
    unsafe fn replay(&self, graph: &Self::Graph) -> Result<()>;
    /// Queue (or run) one piece of work.
    ///
    /// # Safety
    /// As [`Driver::launch`] or [`Driver::gemm`].
    unsafe fn execute(&self, work: &Work) -> Result<()> {
        // SAFETY: forwarded from the caller.
        unsafe {
            match work {
                Work::Launch(kernel, launch) => self.launch(*kernel, launch),
                Work::Gemm(gemm) => self.gemm(gemm),
            }
        }
    }
    /// Wait until all queued work is done.
    fn synchronize(&self) -> Result<()>;
}
