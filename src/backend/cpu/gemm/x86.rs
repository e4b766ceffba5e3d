//! AVX2 (with FMA and F16C) and AVX-512 lanes for the tile kernel, and the kernel entry points
//! compiled for each instruction set.

use std::arch::x86_64::*;
use std::ops::Range;

use half::{bf16, f16};

use super::lanes::{Lanes, LoadWidened};
use super::tile;

/// Eight f32 lanes of a 256-bit register (AVX2, FMA, F16C).
pub struct Avx2;

impl Lanes for Avx2 {
    type V = __m256;
    const WIDTH: usize = 8;

    #[inline(always)]
    unsafe fn zero() -> __m256 {
        // SAFETY: AVX, present whenever this type is used (`Lanes`' contract).
        unsafe { _mm256_setzero_ps() }
    }

    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m256 {
        // SAFETY: the caller guarantees 8 readable f32 at `p`; unaligned load.
        unsafe { _mm256_loadu_ps(p) }
    }

    #[inline(always)]
    unsafe fn mul_add(a: __m256, b: __m256, acc: __m256) -> __m256 {
        // SAFETY: FMA, present whenever this type is used.
        unsafe { _mm256_fmadd_ps(a, b, acc) }
    }

    #[inline(always)]
    unsafe fn sum(v: __m256) -> f32 {
        // SAFETY: AVX/SSE3, present whenever this type is used.
        unsafe {
            let quad = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
            let pair = _mm_add_ps(quad, _mm_movehl_ps(quad, quad));
            _mm_cvtss_f32(_mm_add_ss(pair, _mm_movehdup_ps(pair)))
        }
    }
}

impl LoadWidened<Avx2> for f32 {
    #[inline(always)]
    unsafe fn load_widened(p: *const f32) -> __m256 {
        // SAFETY: forwarded from the caller (8 readable f32).
        unsafe { Avx2::load(p) }
    }
}

impl LoadWidened<Avx2> for f16 {
    #[inline(always)]
    unsafe fn load_widened(p: *const f16) -> __m256 {
        // SAFETY: the caller guarantees 8 readable f16 (16 bytes) at `p`; F16C converts them.
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p.cast())) }
    }
}

impl LoadWidened<Avx2> for bf16 {
    #[inline(always)]
    unsafe fn load_widened(p: *const bf16) -> __m256 {
        // SAFETY: the caller guarantees 8 readable bf16 (16 bytes) at `p`; a bf16 is the high
        // half of the f32 with the same bits, so zero-extend and shift (AVX2).
        unsafe { _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(_mm_loadu_si128(p.cast())))) }
    }
}

/// Sixteen f32 lanes of a 512-bit register (AVX-512F).
pub struct Avx512;

impl Lanes for Avx512 {
    type V = __m512;
    const WIDTH: usize = 16;

    #[inline(always)]
    unsafe fn zero() -> __m512 {
        // SAFETY: AVX-512F, present whenever this type is used (`Lanes`' contract).
        unsafe { _mm512_setzero_ps() }
    }

    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m512 {
        // SAFETY: the caller guarantees 16 readable f32 at `p`; unaligned load.
        unsafe { _mm512_loadu_ps(p) }
    }

    #[inline(always)]
    unsafe fn mul_add(a: __m512, b: __m512, acc: __m512) -> __m512 {
        // SAFETY: AVX-512F, present whenever this type is used.
        unsafe { _mm512_fmadd_ps(a, b, acc) }
    }

    #[inline(always)]
    unsafe fn sum(v: __m512) -> f32 {
        // SAFETY: AVX-512F, present whenever this type is used.
        unsafe { _mm512_reduce_add_ps(v) }
    }
}

impl LoadWidened<Avx512> for f32 {
    #[inline(always)]
    unsafe fn load_widened(p: *const f32) -> __m512 {
        // SAFETY: forwarded from the caller (16 readable f32).
        unsafe { Avx512::load(p) }
    }
}

impl LoadWidened<Avx512> for f16 {
    #[inline(always)]
    unsafe fn load_widened(p: *const f16) -> __m512 {
        // SAFETY: the caller guarantees 16 readable f16 (32 bytes) at `p`; AVX-512F converts them.
        unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p.cast())) }
    }
}

impl LoadWidened<Avx512> for bf16 {
    #[inline(always)]
    unsafe fn load_widened(p: *const bf16) -> __m512 {
        // SAFETY: the caller guarantees 16 readable bf16 (32 bytes) at `p`; zero-extend and
        // shift into the high half of each f32 (AVX-512F).
        unsafe { _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(_mm256_loadu_si256(p.cast())))) }
    }
}

/// A weight element type both x86 instruction sets can stream.
pub trait X86Element: LoadWidened<Avx2> + LoadWidened<Avx512> {}

impl<T: LoadWidened<Avx2> + LoadWidened<Avx512>> X86Element for T {}

/// [`tile::columns`] compiled for AVX2, FMA and F16C.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn columns_avx2<T: LoadWidened<Avx2>>(x: &[f32], w: &[T], rows: usize, k: usize, cols: Range<usize>, out: &mut [&mut [f32]]) {
    // SAFETY: this function only runs where the features `Avx2` needs were detected.
    unsafe { tile::columns::<Avx2, T>(x, w, rows, k, cols, out) }
}

/// [`tile::columns`] compiled for AVX-512F.
///
/// # Safety
/// The CPU must have AVX-512F.
#[target_feature(enable = "avx512f")]
pub unsafe fn columns_avx512<T: LoadWidened<Avx512>>(x: &[f32], w: &[T], rows: usize, k: usize, cols: Range<usize>, out: &mut [&mut [f32]]) {
    // SAFETY: this function only runs where AVX-512F was detected.
    unsafe { tile::columns::<Avx512, T>(x, w, rows, k, cols, out) }
}
