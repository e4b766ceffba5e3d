//! Linear layers on the CPU, `out[rows, n] = x[rows, k] · wᵀ` for a PyTorch-layout `[n, k]`
//! weight, at memory speed for the few rows of a decode or verification step.
//!
//! The weight is streamed in the layout and precision it was loaded in (f32 straight from the
//! memory map, or f16/bf16 as stored in the file, widened in registers with f32 accumulation):
//! no per-call packing. The SIMD kernel (AVX-512 or AVX2/FMA/F16C, chosen at run time, with a
//! portable fallback) is [`tile`]; [`split`] hands column ranges to rayon's threads when the
//! call is large enough to pay for it.

mod isa;
mod lanes;
mod matrix;
mod split;
mod tile;
#[cfg(target_arch = "x86_64")]
mod x86;

#[cfg(test)]
mod tests;

use std::ops::Range;

pub use isa::Isa;
pub use matrix::WeightMatrix;

use half::{bf16, f16};
use lanes::{LoadWidened, Portable};

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

/// `out[rows, n] = x[rows, k] · wᵀ` on the widest instruction set this CPU has; `x` and `out`
/// may be longer than `rows * k` and `rows * n` (the rest of `out` is left alone).
pub fn linear(x: &[f32], w: WeightMatrix<'_>, rows: usize, k: usize, n: usize, out: &mut [f32]) {
    linear_on(Isa::detect(), x, w, rows, k, n, out);
}

/// [`linear`] on instruction set `isa` (for tests and benches comparing the paths).
///
/// # Panics
/// When this CPU cannot run `isa`, or the operands are shorter than the shapes say.
pub fn linear_on(isa: Isa, x: &[f32], w: WeightMatrix<'_>, rows: usize, k: usize, n: usize, out: &mut [f32]) {
    assert!(isa.is_available(), "{isa:?} is not available on this CPU");
    assert!(x.len() >= rows * k && w.len() == n * k && out.len() >= rows * n, "linear: operands do not match [{rows}x{k}]·[{n}x{k}]ᵀ");
    match w {
        WeightMatrix::F32(w) => run::<f32>(isa, x, w, rows, k, n, out),
        WeightMatrix::F16(w) => run::<f16>(isa, x, w, rows, k, n, out),
        WeightMatrix::BF16(w) => run::<bf16>(isa, x, w, rows, k, n, out),
    }
}

/// Split the columns between threads and run the kernel on each part.
fn run<T: Streamed>(isa: Isa, x: &[f32], w: &[T], rows: usize, k: usize, n: usize, out: &mut [f32]) {
    let work = std::mem::size_of_val(w) * rows.div_ceil(tile::ROW_TILE);
    split::by_columns(rows, n, tile::COL_TILE, work, out, |cols, out_rows| columns_on(isa, x, w, rows, k, cols, out_rows));
}

/// The kernel for columns `cols`, compiled for `isa` (checked available by [`linear_on`]).
fn columns_on<T: Streamed>(isa: Isa, x: &[f32], w: &[T], rows: usize, k: usize, cols: Range<usize>, out: &mut [&mut [f32]]) {
    match isa {
        // SAFETY: the portable lanes need no instruction set beyond the target's baseline.
        Isa::Portable => unsafe { tile::columns::<Portable, T>(x, w, rows, k, cols, out) },
        // SAFETY: `linear_on` checked that this CPU has AVX2, FMA and F16C.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86::columns_avx2(x, w, rows, k, cols, out) },
        // SAFETY: `linear_on` checked that this CPU has AVX-512F.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { x86::columns_avx512(x, w, rows, k, cols, out) },
    }
}
