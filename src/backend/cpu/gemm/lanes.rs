//! What the GEMM kernel needs from an instruction set: a vector of [`PANEL`] f32 lanes (one
//! packed panel of output columns), broadcast, fused multiply-add and store, and loads that widen
//! each weight element type to f32 lanes.
//!
//! [`Portable`] is plain Rust on lane arrays, which the compiler vectorises for the target's
//! baseline (SSE2 on x86-64, NEON on aarch64); `x86` adds AVX2 and AVX-512 with intrinsics.

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
    values.map(widen)
}

/// An f16 as f32, exactly, in branch-free arithmetic the compiler vectorises: the exponent and
/// mantissa shifted into f32 position make an f32 2^-112 times the value (normal or subnormal),
/// which one multiplication rescales; infinities and NaNs get the f32 all-ones exponent.
#[inline(always)]
fn f16_to_f32(h: f16) -> f32 {
    let bits = h.to_bits() as u32;
    let magnitude = (bits & 0x7fff) << 13;
    let scaled = (f32::from_bits(magnitude) * f32::from_bits(0x7780_0000)).to_bits();
    let finite_or_special = if magnitude >= 0x7c00 << 13 { magnitude | 0x7f80_0000 } else { scaled };
    f32::from_bits(finite_or_special | ((bits & 0x8000) << 16))
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
        // SAFETY: forwarded from the caller.
        unsafe { read_widened(p, f16_to_f32) }
    }
}

impl LoadWidened<Portable> for bf16 {
    #[inline(always)]
    unsafe fn load_widened(p: *const bf16) -> [f32; PANEL] {
        // SAFETY: forwarded from the caller. A bf16 is the high half of the f32 it stands for.
        unsafe { read_widened(p, |v: bf16| f32::from_bits((v.to_bits() as u32) << 16)) }
    }
}

#[cfg(test)]
mod tests {
    use half::f16;

    #[test]
    fn the_branch_free_f16_widening_is_exact_for_every_value() {
        for bits in 0..=u16::MAX {
            let h = f16::from_bits(bits);
            let (want, got) = (h.to_f32(), super::f16_to_f32(h));
            assert!(want.to_bits() == got.to_bits() || (want.is_nan() && got.is_nan()), "{bits:#06x}: {got} vs {want}");
        }
    }
}
