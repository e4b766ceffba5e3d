//! Golden tensors in a safetensors file, read by dtype, and the relative comparison the golden
//! tests use.

use std::path::Path;

use safetensors::SafeTensors;

/// The bytes of a golden safetensors file.
pub struct Golden(Vec<u8>);

impl Golden {
    /// Read `path` (panics naming it if it is missing).
    pub fn load(path: &Path) -> Self {
        Golden(std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
    }

    /// The raw little-endian bytes of tensor `name`.
    pub fn bytes(&self, name: &str) -> Vec<u8> {
        SafeTensors::deserialize(&self.0).unwrap().tensor(name).unwrap_or_else(|e| panic!("golden {name}: {e}")).data().to_vec()
    }

    /// An f32 tensor.
    pub fn f32(&self, name: &str) -> Vec<f32> {
        self.bytes(name).chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
    }

    /// An f64 tensor.
    pub fn f64(&self, name: &str) -> Vec<f64> {
        self.bytes(name).chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap())).collect()
    }

    /// An i64 tensor as indices.
    pub fn usize(&self, name: &str) -> Vec<usize> {
        self.bytes(name).chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap()) as usize).collect()
    }

    /// The first value of an f64 tensor.
    pub fn scalar(&self, name: &str) -> f64 {
        self.f64(name)[0]
    }

    /// A u8 tensor as flags.
    pub fn flags(&self, name: &str) -> Vec<bool> {
        self.bytes(name).iter().map(|&m| m != 0).collect()
    }
}

/// Max |got - want| over max |want|, printed, and checked against `tolerance`.
pub fn check_close<T: Copy + Into<f64>>(name: &str, got: &[T], want: &[T], tolerance: f64) {
    assert_eq!(got.len(), want.len(), "{name}: length");
    let scale = want.iter().fold(0f64, |m, &v| m.max(v.into().abs()));
    let err = got.iter().zip(want).fold(0f64, |m, (&a, &b)| m.max((a.into() - b.into()).abs())) / scale;
    println!("{name}: max relative error {err:.2e} (tolerance {tolerance:.1e})");
    assert!(err <= tolerance, "{name}: max relative error {err:.3e} above {tolerance:.1e}");
}
