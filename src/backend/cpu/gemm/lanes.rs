//! What the GEMM tile needs from an instruction set: a vector of f32 lanes, fused multiply-add,
//! a horizontal sum, and loads that widen each weight element type to f32 lanes.
//!
//! [`Portable`] is plain Rust on lane arrays, which the compiler vectorises for the target's
//! baseline (SSE2 on x86-64, NEON on aarch64); `x86` adds AVX2 and AVX-512 with intrinsics.

use half::{bf16, f16};

/// An element type weights are stored in, with its exact widening to f32.
pub trait Element: Copy + Send + Sync + 'static {
    /// The value as f32 (exact for f32, f16 and bf16).
    fn to_f32(self) -> f32;
}

impl Element for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
}

impl Element for f16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
}

impl Element for bf16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
}

/// A vector of f32 lanes and the operations the tile kernel performs on it.
///
/// # Safety
/// Implementations for an instruction set may only run on a CPU that has it: the kernels built
/// on them are called only after runtime detection (`Isa::detect`).
pub trait Lanes {
    /// The register type.
    type V: Copy;
    /// f32 lanes per register.
    const WIDTH: usize;
    /// All lanes zero.
    unsafe fn zero() -> Self::V;
    /// `WIDTH` f32 read from `p` (any alignment).
    unsafe fn load(p: *const f32) -> Self::V;
    /// `a * b + acc` per lane.
    unsafe fn mul_add(a: Self::V, b: Self::V, acc: Self::V) -> Self::V;
    /// The sum of the lanes.
    unsafe fn sum(v: Self::V) -> f32;
}

/// Loading `L::WIDTH` weights of this element type as f32 lanes.
pub trait LoadWidened<L: Lanes>: Element {
    /// `L::WIDTH` elements read from `p` (any alignment), widened to f32.
    unsafe fn load_widened(p: *const Self) -> L::V;
}

/// Sixteen f32 lanes in plain Rust: the fallback every CPU runs, and the reference the SIMD
/// paths are tested against.
pub struct Portable;

/// Lanes of [`Portable`].
const PORTABLE_WIDTH: usize = 16;

impl Lanes for Portable {
    type V = [f32; PORTABLE_WIDTH];
    const WIDTH: usize = PORTABLE_WIDTH;

    #[inline(always)]
    unsafe fn zero() -> Self::V {
        [0.0; PORTABLE_WIDTH]
    }

    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self::V {
        // SAFETY: the caller guarantees `WIDTH` readable f32 at `p`.
        unsafe { p.cast::<Self::V>().read_unaligned() }
    }

    #[inline(always)]
    unsafe fn mul_add(a: Self::V, b: Self::V, acc: Self::V) -> Self::V {
        // Separate multiply and add: `f32::mul_add` is a library call where FMA is not baseline.
        std::array::from_fn(|i| a[i] * b[i] + acc[i])
    }

    #[inline(always)]
    unsafe fn sum(v: Self::V) -> f32 {
        v.iter().sum()
    }
}

/// Widen `PORTABLE_WIDTH` elements read from `p`.
#[inline(always)]
unsafe fn widen_portable<T: Element>(p: *const T) -> [f32; PORTABLE_WIDTH] {
    // SAFETY: the caller guarantees `PORTABLE_WIDTH` readable elements at `p`.
    let values = unsafe { p.cast::<[T; PORTABLE_WIDTH]>().read_unaligned() };
    values.map(Element::to_f32)
}

impl LoadWidened<Portable> for f32 {
    #[inline(always)]
    unsafe fn load_widened(p: *const f32) -> [f32; PORTABLE_WIDTH] {
        // SAFETY: forwarded from the caller.
        unsafe { Portable::load(p) }
    }
}

impl LoadWidened<Portable> for f16 {
    #[inline(always)]
    unsafe fn load_widened(p: *const f16) -> [f32; PORTABLE_WIDTH] {
        // SAFETY: forwarded from the caller.
        unsafe { widen_portable(p) }
    }
}

impl LoadWidened<Portable> for bf16 {
    #[inline(always)]
    unsafe fn load_widened(p: *const bf16) -> [f32; PORTABLE_WIDTH] {
        // SAFETY: forwarded from the caller.
        unsafe { widen_portable(p) }
    }
}
