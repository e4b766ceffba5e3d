//! What the GEMM kernel needs from an instruction set: a vector of [`PANEL`] f32 lanes (one
//! packed panel of output columns), broadcast, fused multiply-add and store, and loads that widen
//! each weight element type to f32 lanes.
//!
//! [`Portable`] is plain Rust on lane arrays, which the compiler vectorises for the target's
//! baseline (SSE2 on x86-64, NEON on aarch64); `x86` adds AVX2 and AVX-512 with intrinsics.

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

/// Output columns per packed panel, and f32 lanes per [`Lanes::V`].
pub const PANEL: usize = 16;

/// An element type weights are stored in.
pub trait Element: Copy + Send + Sync + 'static {
    /// Zero, for the padding of a last, partial panel.
    const ZERO: Self;
}

impl Element for f32 {
    const ZERO: Self = 0.0;
}

impl Element for f16 {
    const ZERO: Self = f16::ZERO;
}

impl Element for bf16 {
    const ZERO: Self = bf16::ZERO;
}

/// A vector of [`PANEL`] f32 lanes and the operations the kernel performs on it.
///
/// # Safety
/// Implementations for an instruction set may only run on a CPU that has it: the kernels built
/// on them are called only after runtime detection (`Isa::available`).
pub trait Lanes {
    /// The register(s) holding [`PANEL`] lanes.
    type V: Copy;
    /// All lanes zero.
    unsafe fn zero() -> Self::V;
    /// All lanes `x`.
    unsafe fn splat(x: f32) -> Self::V;
    /// `a * b + acc` per lane.
    unsafe fn mul_add(a: Self::V, b: Self::V, acc: Self::V) -> Self::V;
    /// The lanes, in order.
    unsafe fn store(v: Self::V, out: &mut [f32; PANEL]);
}

/// Loading [`PANEL`] weights of this element type as f32 lanes.
pub trait LoadWidened<L: Lanes>: Element {
    /// [`PANEL`] elements read from `p` (any alignment), widened to f32 (exactly).
    unsafe fn load_widened(p: *const Self) -> L::V;
}

/// Sixteen f32 lanes in plain Rust: the fallback every CPU runs, and the reference the SIMD
/// paths are tested against.
pub struct Portable;

impl Lanes for Portable {
    type V = [f32; PANEL];

    #[inline(always)]
    unsafe fn zero() -> Self::V {
        [0.0; PANEL]
    }

    #[inline(always)]
    unsafe fn splat(x: f32) -> Self::V {
        [x; PANEL]
    }

    #[inline(always)]
    unsafe fn mul_add(a: Self::V, b: Self::V, acc: Self::V) -> Self::V {
        // Separate multiply and add: `f32::mul_add` is a library call where FMA is not baseline.
        std::array::from_fn(|i| a[i] * b[i] + acc[i])
    }

    #[inline(always)]
    unsafe fn store(v: Self::V, out: &mut [f32; PANEL]) {
        *out = v;
    }
}

/// [`PANEL`] values read from `p`, each widened by `widen`.
#[inline(always)]
unsafe fn read_widened<T: Copy>(p: *const T, widen: impl Fn(T) -> f32) -> [f32; PANEL] {
    // SAFETY: the caller guarantees `PANEL` readable elements at `p`.
    let values = unsafe { p.cast::<[T; PANEL]>().read_unaligned() };
    let mut lanes = [0f32; PANEL];
    for (lane, &v) in lanes.iter_mut().zip(&values) {
        *lane = widen(v);
    }
    lanes
}

impl LoadWidened<Portable> for f32 {
    #[inline(always)]
    unsafe fn load_widened(p: *const f32) -> [f32; PANEL] {
        // SAFETY: forwarded from the caller.
        unsafe { read_widened(p, |v| v) }
    }
}

impl LoadWidened<Portable> for f16 {
    #[inline(always)]
    unsafe fn load_widened(p: *const f16) -> [f32; PANEL] {
        // SAFETY: the caller guarantees `PANEL` readable f16 at `p`.
        let values = unsafe { p.cast::<[f16; PANEL]>().read_unaligned() };
        // `half` converts slices with the CPU's own instructions where it has them (F16C, the
        // aarch64 FP16 extension), detected at run time, and in software elsewhere.
        let mut lanes = [0f32; PANEL];
        values.convert_to_f32_slice(&mut lanes);
        lanes
    }
}

impl LoadWidened<Portable> for bf16 {
    #[inline(always)]
    unsafe fn load_widened(p: *const bf16) -> [f32; PANEL] {
        // SAFETY: forwarded from the caller. A bf16 is the high half of the f32 it stands for.
        unsafe { read_widened(p, |v: bf16| f32::from_bits((v.to_bits() as u32) << 16)) }
    }
}
