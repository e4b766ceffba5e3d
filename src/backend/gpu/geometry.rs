//! Launch-geometry constants of the kernels, defined once. The launch code in this module reads
//! them, and every kernel compile receives each of them as `-DNAME=value`: build.rs passes them to
//! nvcc and to the emulator's C++ compiler (it includes this file), the NVRTC loader passes
//! [`DEFINES`], and `tools/check_kernels.sh` parses the `pub const` lines below. The kernels
//! refuse to compile without them (`kernels/common.cuh`).

/// Threads per block of the row-wise and elementwise kernels (norm, embedding, concat, KV).
pub const ROW_THREADS: u32 = 256;
/// Threads per block of `rope`.
pub const ROPE_THREADS: u32 = 128;
/// Warps per block of `paged_attention`.
pub const ATTN_WARPS: u32 = 4;
/// Largest head width `paged_attention` handles.
pub const MAX_HEAD_DIM: u32 = 256;
/// Most query rows with the same keys (a draft tree's nodes) one `paged_attention` block serves,
/// reading each key once for all of them; a multiple of [`ATTN_WARPS`].
pub const ATTN_GROUP_ROWS: u32 = 16;
/// Threads per block of `accept_block`; also fixes how its CPU twin chunks the vocabulary.
pub const ACCEPT_THREADS: u32 = 256;
/// Threads per block of `process_logits` (kernels/sampling.cu); also fixes how its CPU twin
/// deals the vocabulary out to threads and orders its reductions.
pub const SAMPLING_THREADS: u32 = 256;

/// Most rows of the skinny bf16 GEMM (kernels/gemv.cu); more take cast + cuBLAS.
pub const SKINNY_ROWS: u32 = 16;
/// Warps (output columns) per block of the skinny bf16 GEMM.
pub const SKINNY_WARPS: u32 = 8;

/// Every constant above as `(name, value)`, for the compilers' `-D` flags.
pub const DEFINES: [(&str, u32); 9] = [
    ("ROW_THREADS", ROW_THREADS),
    ("ROPE_THREADS", ROPE_THREADS),
    ("ATTN_WARPS", ATTN_WARPS),
    ("MAX_HEAD_DIM", MAX_HEAD_DIM),
    ("ATTN_GROUP_ROWS", ATTN_GROUP_ROWS),
    ("ACCEPT_THREADS", ACCEPT_THREADS),
    ("SAMPLING_THREADS", SAMPLING_THREADS),
    ("SKINNY_ROWS", SKINNY_ROWS),
    ("SKINNY_WARPS", SKINNY_WARPS),
];
