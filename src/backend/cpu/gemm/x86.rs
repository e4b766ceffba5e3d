//! AVX2 (with FMA and F16C) and AVX-512 lanes for the kernel, and the kernel entry points
//! compiled for each instruction set with its tile shape.

use std::arch::x86_64::*;
use std::ops::Range;

use half::{bf16, f16};

use super::lanes::{Lanes, LoadWidened, PANEL};
use super::packed::Packed;
use super::tile;

/// Sixteen f32 lanes in two 256-bit registers (AVX2, FMA, F16C).
pub struct Avx2;

impl Lanes for Avx2 {
    type V = [__m256; 2];

    #[inline(always)]
    unsafe fn zero() -> Self::V {
        // SAFETY: AVX, present whenever this type is used (`Lanes`' contract).
        unsafe { [_mm256_setzero_ps(); 2] }
    }

    #[inline(always)]
    unsafe fn splat(x: f32) -> Self::V {
        // SAFETY: AVX, present whenever this type is used.
        unsafe { [_mm256_set1_ps(x); 2] }
    }

    #[inline(always)]
    unsafe fn mul_add(a: Self::V, b: Self::V, acc: Self::V) -> Self::V {
        // SAFETY: FMA, present whenever this type is used.
        unsafe { [_mm256_fmadd_ps(a[0], b[0], acc[0]), _mm256_fmadd_ps(a[1], b[1], acc[1])] }
    }

    #[inline(always)]
    unsafe fn store(v: Self::V, out: &mut [f32; PANEL]) {
        // SAFETY: `out` holds 16 f32, two unaligned 8-lane stores.
        unsafe {
            _mm256_storeu_ps(out.as_mut_ptr(), v[0]);
            _mm256_storeu_ps(out.as_mut_ptr().add(8), v[1]);
        }
    }
}

impl LoadWidened<Avx2> for f32 {
    #[inline(always)]
    unsafe fn load_widened(p: *const f32) -> [__m256; 2] {
        // SAFETY: the caller guarantees 16 readable f32 at `p`; unaligned loads.
        unsafe { [_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8))] }
    }
}

impl LoadWidened<Avx2> for f16 {
    #[inline(always)]
    unsafe fn load_widened(p: *const f16) -> [__m256; 2] {
        // SAFETY: the caller guarantees 16 readable f16 (32 bytes) at `p`; F16C converts them.
        unsafe { [_mm256_cvtph_ps(_mm_loadu_si128(p.cast())), _mm256_cvtph_ps(_mm_loadu_si128(p.add(8).cast()))] }
    }
}

/// Eight bf16 at `p` as f32: zero-extended and shifted into the high half of each lane (AVX2).
#[inline(always)]
unsafe fn widen_bf16_avx2(p: *const bf16) -> __m256 {
    // SAFETY: the caller guarantees 8 readable bf16 (16 bytes) at `p` and AVX2.
    unsafe { _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(_mm_loadu_si128(p.cast())))) }
}

impl LoadWidened<Avx2> for bf16 {
    #[inline(always)]
    unsafe fn load_widened(p: *const bf16) -> [__m256; 2] {
        // SAFETY: the caller guarantees 16 readable bf16 at `p`.
        unsafe { [widen_bf16_avx2(p), widen_bf16_avx2(p.add(8))] }
    }
}

/// Sixteen f32 lanes of a 512-bit register (AVX-512F).
pub struct Avx512;

impl Lanes for Avx512 {
    type V = __m512;

    #[inline(always)]
    unsafe fn zero() -> __m512 {
        // SAFETY: AVX-512F, present whenever this type is used (`Lanes`' contract).
        unsafe { _mm512_setzero_ps() }
    }

    #[inline(always)]
    unsafe fn splat(x: f32) -> __m512 {
        // SAFETY: AVX-512F, present whenever this type is used.
        unsafe { _mm512_set1_ps(x) }
    }

    #[inline(always)]
    unsafe fn mul_add(a: __m512, b: __m512, acc: __m512) -> __m512 {
        // SAFETY: AVX-512F, present whenever this type is used.
        unsafe { _mm512_fmadd_ps(a, b, acc) }
    }

    #[inline(always)]
    unsafe fn store(v: __m512, out: &mut [f32; PANEL]) {
        // SAFETY: `out` holds 16 f32; unaligned store.
        unsafe { _mm512_storeu_ps(out.as_mut_ptr(), v) }
    }
}

impl LoadWidened<Avx512> for f32 {
    #[inline(always)]
    unsafe fn load_widened(p: *const f32) -> __m512 {
        // SAFETY: the caller guarantees 16 readable f32 at `p`; unaligned load.
        unsafe { _mm512_loadu_ps(p) }
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

/// [`tile::panels`] for AVX2, FMA and F16C: tiles of 4 rows x 1 panel (8 accumulators of the
/// 16 registers).
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn panels_avx2<T: LoadWidened<Avx2>>(x: &[f32], w: Packed<'_, T>, rows: usize, panels: Range<usize>, out: &mut [&mut [f32]]) {
    // SAFETY: this function only runs where the features `Avx2` needs were detected.
    unsafe { tile::panels::<Avx2, T, 4, 1>(x, w, rows, panels, out) }
}

/// [`tile::panels`] for AVX-512F, in tiles of at most 24 accumulators of the 32 registers, as
/// tall as the call's rows allow: 1-6 rows x 4 panels, 7-8 rows x 3 panels, and from 9 rows
/// on tiles of 12 rows x 2 panels. Every row count up to 12 is one tile, so each weight is
/// loaded and widened once per call; widening f16 takes the FMA ports on some cores (two uops
/// per 16 values on Intel), and a taller tile spreads that over more multiply-adds.
///
/// # Safety
/// The CPU must have AVX-512F.
#[target_feature(enable = "avx512f")]
pub unsafe fn panels_avx512<T: LoadWidened<Avx512>>(x: &[f32], w: Packed<'_, T>, rows: usize, panels: Range<usize>, out: &mut [&mut [f32]]) {
    // SAFETY: this function only runs where AVX-512F was detected.
    unsafe {
        match rows {
            0..=6 => tile::panels::<Avx512, T, 6, 4>(x, w, rows, panels, out),
            7..=8 => tile::panels::<Avx512, T, 8, 3>(x, w, rows, panels, out),
            _ => tile::panels::<Avx512, T, 12, 2>(x, w, rows, panels, out),
        }
    }
}
