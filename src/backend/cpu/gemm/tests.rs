//! Every instruction set against a plain f64 reference over odd shapes (rows 1..=33, `k` and
//! `n` not multiples of the panel or vector widths), in each weight precision; the portable path
//! is forced like any other.

use half::{bf16, f16};

use super::{linear_on, Isa, PackedMatrix, WeightMatrix};
use crate::sampling::Rng;
use crate::weights::synthetic::normal;

fn random(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..len).map(|_| normal(&mut rng)).collect()
}

/// `x · wᵀ` in f64, and the magnitude `|x| · |w|ᵀ` each result's rounding error scales with.
fn reference(x: &[f32], w: &[f32], rows: usize, k: usize, n: usize) -> (Vec<f64>, Vec<f64>) {
    let (mut dots, mut scale) = (vec![0.0; rows * n], vec![0.0; rows * n]);
    for r in 0..rows {
        for c in 0..n {
            for i in 0..k {
                let (a, b) = (x[r * k + i] as f64, w[c * k + i] as f64);
                dots[r * n + c] += a * b;
                scale[r * n + c] += (a * b).abs();
            }
        }
    }
    (dots, scale)
}

/// The same values in each stored precision, and those values widened back to f32.
fn precisions(values: &[f32]) -> [(Vec<f32>, Stored); 3] {
    let halves: Vec<f16> = values.iter().map(|&v| f16::from_f32(v)).collect();
    let brains: Vec<bf16> = values.iter().map(|&v| bf16::from_f32(v)).collect();
    [
        (values.to_vec(), Stored::F32(values.to_vec())),
        (halves.iter().map(|v| v.to_f32()).collect(), Stored::F16(halves)),
        (brains.iter().map(|v| v.to_f32()).collect(), Stored::BF16(brains)),
    ]
}

enum Stored {
    F32(Vec<f32>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
}

impl Stored {
    fn matrix(&self) -> WeightMatrix<'_> {
        match self {
            Stored::F32(w) => WeightMatrix::F32(w),
            Stored::F16(w) => WeightMatrix::F16(w),
            Stored::BF16(w) => WeightMatrix::BF16(w),
        }
    }
}

fn check(isa: Isa, rows: usize, k: usize, n: usize, seed: u64) {
    let x = random(rows * k, seed);
    for (widened, stored) in precisions(&random(n * k, seed + 1)) {
        let (want, scale) = reference(&x, &widened, rows, k, n);
        // Longer than needed: the kernel must leave the tail alone.
        let mut out = vec![f32::NAN; rows * n + 3];
        linear_on(isa, &x, &PackedMatrix::pack(stored.matrix(), n, k), rows, &mut out);
        for (i, ((&got, &want), &scale)) in out.iter().zip(&want).zip(&scale).enumerate() {
            let err = (got as f64 - want).abs();
            assert!(err <= 1e-6 * (k as f64) * scale + 1e-30, "{isa:?} {rows}x{k}x{n} element {i}: {got} vs {want}");
        }
        assert!(out[rows * n..].iter().all(|v| v.is_nan()), "{isa:?} wrote past rows * n");
    }
}

#[test]
fn every_instruction_set_matches_the_reference_on_odd_shapes() {
    for &isa in Isa::available() {
        for rows in 1..=33 {
            for (k, n) in [(1, 1), (7, 5), (17, 3), (33, 13), (100, 9), (255, 37), (40, 71)] {
                check(isa, rows, k, n, (rows * 1000 + k * 10 + n) as u64);
            }
        }
    }
}

#[test]
fn simd_paths_agree_with_the_forced_portable_path() {
    let (rows, k, n) = (10, 301, 67);
    let x = random(rows * k, 11);
    let w = PackedMatrix::pack(WeightMatrix::F32(&random(n * k, 12)), n, k);
    let mut portable = vec![0.0; rows * n];
    linear_on(Isa::Portable, &x, &w, rows, &mut portable);
    for &isa in Isa::available() {
        let mut out = vec![0.0; rows * n];
        linear_on(isa, &x, &w, rows, &mut out);
        for (a, b) in out.iter().zip(&portable) {
            assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{isa:?}: {a} vs portable {b}");
        }
    }
}

#[test]
fn an_element_does_not_depend_on_the_other_rows_columns_or_the_thread_split() {
    // Large enough to be split between threads, with a column count no tile divides.
    let (rows, k, n) = (7, 1024, 1203);
    let x = random(rows * k, 21);
    let w = random(n * k, 22);
    // Pieces small enough to run on one thread, starting at columns no tile boundary meets.
    let piece = 97;
    for &isa in Isa::available() {
        let mut together = vec![0.0; rows * n];
        linear_on(isa, &x, &PackedMatrix::pack(WeightMatrix::F32(&w), n, k), rows, &mut together);
        for r in 0..rows {
            for c0 in (0..n).step_by(piece) {
                let c1 = (c0 + piece).min(n);
                let mut alone = vec![0.0; c1 - c0];
                let piece = PackedMatrix::pack(WeightMatrix::F32(&w[c0 * k..c1 * k]), c1 - c0, k);
                linear_on(isa, &x[r * k..(r + 1) * k], &piece, 1, &mut alone);
                assert_eq!(alone, together[r * n + c0..r * n + c1], "{isa:?} row {r}, columns {c0}..{c1}");
            }
        }
    }
}
