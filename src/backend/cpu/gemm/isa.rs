//! Which instruction set the GEMM kernel runs on, chosen once at run time.

use std::sync::OnceLock;

/// An instruction set the GEMM kernel is compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// Plain Rust, vectorised by the compiler for the target's baseline (SSE2, NEON).
    Portable,
    /// AVX2 with FMA and F16C, 8 lanes.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// AVX-512F, 16 lanes.
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Isa {
    /// The widest instruction set this CPU has.
    pub fn detect() -> Isa {
        *Isa::available().last().expect("the portable kernel is always available")
    }

    /// Every instruction set this CPU can run, narrowest first ([`Isa::Portable`] always);
    /// detected once.
    pub fn available() -> &'static [Isa] {
        static AVAILABLE: OnceLock<Vec<Isa>> = OnceLock::new();
        AVAILABLE.get_or_init(|| {
            let mut isas = vec![Isa::Portable];
            #[cfg(target_arch = "x86_64")]
            {
                if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c") {
                    isas.push(Isa::Avx2);
                }
                if is_x86_feature_detected!("avx512f") {
                    isas.push(Isa::Avx512);
                }
            }
            isas
        })
    }

    /// True when this CPU can run `self`.
    pub fn is_available(self) -> bool {
        Isa::available().contains(&self)
    }
}
