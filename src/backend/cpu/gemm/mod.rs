//! Linear layers on the CPU, `out[rows, n] = x[rows, k] · wᵀ` for a PyTorch-layout `[n, k]`
//! weight, at memory speed for the few rows of a decode or verification step.
//!
//! Weights are packed once ([`PackedMatrix`]: panels of 16 output columns, in their stored
//! precision, f16/bf16 widened in registers with f32 accumulation), never per call. The SIMD
//! kernel (AVX-512, or AVX2/FMA/F16C, chosen at run time, with a portable fallback) is `tile`;
//! `split` hands ranges of panels to rayon's threads when the call is large enough to pay for
//! it. One kernel serves every row count: each tile of rows streams the weights once, so a
//! 64-row verification costs little more than its multiply-adds.

mod isa;
mod lanes;
mod packed;
mod split;
mod tile;
#[cfg(target_arch = "x86_64")]
mod x86;

#[cfg(test)]
mod tests;

use std::ops::Range;

pub use isa::Isa;
pub use packed::{Packed, PackedMatrix, WeightMatrix};

use lanes::{LoadWidened, Portable};
use packed::PackedValues;

/// Panels per thread-split unit: the widest tile (AVX-512's 4 panels) stays whole.
const SPLIT_GROUP: usize = 4;
/// Weight bytes one core streams per nanosecond, at the least (DRAM; L3 is faster).
const STREAM_BYTES_PER_NS: usize = 16;
/// Multiply-adds one core does per nanosecond, about (AVX-512 at its FMA peak does ~100).
const MACS_PER_NS: usize = 64;

/// A weight element type every compiled instruction set can stream.
#[cfg(target_arch = "x86_64")]
trait Streamed: LoadWidened<Portable> + x86::X86Element {}
#[cfg(target_arch = "x86_64")]
impl<T: LoadWidened<Portable> + x86::X86Element> Streamed for T {}
/// A weight element type every compiled instruction set can stream.
#[cfg(not(target_arch = "x86_64"))]
trait Streamed: LoadWidened<Portable> {}
#[cfg(not(target_arch = "x86_64"))]
impl<T: LoadWidened<Portable>> Streamed for T {}

/// `out[rows, w.n()] = x[rows, w.k()] · wᵀ` on the widest instruction set this CPU has; `x` and
/// `out` may be longer than needed (the rest of `out` is left alone).
pub fn linear(x: &[f32], w: &PackedMatrix, rows: usize, out: &mut [f32]) {
    linear_on(Isa::detect(), x, w, rows, out);
}

/// [`linear`] on instruction set `isa` (for tests and benches comparing the paths).
///
/// # Panics
/// When this CPU cannot run `isa`, or `x` or `out` is shorter than the shapes say.
pub fn linear_on(isa: Isa, x: &[f32], w: &PackedMatrix, rows: usize, out: &mut [f32]) {
    assert!(isa.is_available(), "{isa:?} is not available on this CPU");
    assert!(x.len() >= rows * w.k() && out.len() >= rows * w.n(), "linear: operands shorter than [{rows}x{}]·[{}x{}]ᵀ", w.k(), w.n(), w.k());
    let estimated_ns = (w.bytes() / STREAM_BYTES_PER_NS).max(rows * w.n() * w.k() / MACS_PER_NS);
    match w.values() {
        PackedValues::F32(values) => run(isa, x, w.view(values), rows, estimated_ns, out),
        PackedValues::F16(values) => run(isa, x, w.view(values), rows, estimated_ns, out),
        PackedValues::BF16(values) => run(isa, x, w.view(values), rows, estimated_ns, out),
    }
}

/// Split the panels between threads (when the call is long enough) and run the kernel on each.
fn run<T: Streamed>(isa: Isa, x: &[f32], w: Packed<'_, T>, rows: usize, estimated_ns: usize, out: &mut [f32]) {
    split::by_panels(rows, w.n, SPLIT_GROUP, estimated_ns, out, |panels, out_rows| panels_on(isa, x, w, rows, panels, out_rows));
}

/// The kernel for `panels`, compiled for `isa` (checked available by [`linear_on`]).
fn panels_on<T: Streamed>(isa: Isa, x: &[f32], w: Packed<'_, T>, rows: usize, panels: Range<usize>, out: &mut [&mut [f32]]) {
    match isa {
        // SAFETY: the portable lanes need no instruction set beyond the target's baseline.
        Isa::Portable => unsafe { tile::panels::<Portable, T, 4, 1>(x, w, rows, panels, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `linear_on` checked that this CPU has AVX2, FMA and F16C.
        Isa::Avx2 => unsafe { x86::panels_avx2(x, w, rows, panels, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `linear_on` checked that this CPU has AVX-512F.
        Isa::Avx512 => unsafe { x86::panels_avx512(x, w, rows, panels, out) },
    }
}
