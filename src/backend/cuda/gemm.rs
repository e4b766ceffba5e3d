//! `linear` on cuBLAS: `out[rows, n] = x[rows, k] · Wᵀ` for a row-major `[n, k]` weight.
//!
//! cuBLAS is column-major, where row-major `out` is `outᵀ [n, rows]`: `outᵀ = W · xᵀ`, with `W`
//! read as the column-major `[k, n]` matrix transposed (`transa = T`, `lda = k`) and `xᵀ` as the
//! column-major `[k, rows]` matrix (`transb = N`, `ldb = k`). f32 weights use `cublasSgemm` (f32
//! math, no TF32); bf16 weights cast `x` to bf16 (kernels/elementwise.cu `f32_to_bf16`) and use
//! `cublasGemmEx` with bf16 inputs, f32 output and f32 accumulation.

use cudarc::cublas::sys::{cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cudaDataType_t};
use cudarc::cublas::{Gemm, GemmConfig};
use cudarc::driver::{DevicePtr, DevicePtrMut, PushKernelArg};

use super::buffer::{alloc_zeros, cuda_error, CudaBuf, CudaWeight};
use super::kernels::{elementwise_config, launch};
use super::CudaBackend;
use crate::error::Result;

impl CudaBackend {
    /// `out = x · weightᵀ` (shapes checked by the caller).
    pub(super) fn gemm(&self, x: &CudaBuf, weight: &CudaWeight, rows: usize, k: usize, n: usize, out: &mut CudaBuf) -> Result<()> {
        if rows == 0 || n == 0 {
            return Ok(());
        }
        let (m_, n_, k_) = (n as i32, rows as i32, k as i32);
        match weight {
            CudaWeight::F32(w) => {
                let cfg = GemmConfig {
                    transa: cublasOperation_t::CUBLAS_OP_T,
                    transb: cublasOperation_t::CUBLAS_OP_N,
                    m: m_,
                    n: n_,
                    k: k_,
                    alpha: 1.0f32,
                    lda: k_,
                    ldb: k_,
                    beta: 0.0f32,
                    ldc: m_,
                };
                // SAFETY: W holds n*k, x at least rows*k and out at least rows*n f32 (checked by
                // the caller), matching the dimensions and leading dimensions above.
                unsafe { self.blas.gemm(cfg, &w.data, &x.data, &mut out.data) }.map_err(cuda_error("linear (sgemm)"))
            }
            CudaWeight::Bf16 { data, .. } => {
                let len = rows * k;
                let mut x16 = alloc_zeros::<u16>(&self.stream, len)?;
                let len64 = len as u64;
                let mut args = self.stream.launch_builder(&self.kernels.f32_to_bf16);
                args.arg(&x.data).arg(&mut x16).arg(&len64);
                launch(args, elementwise_config(len), "linear (cast to bf16)")?;
                let (alpha, beta) = (1.0f32, 0.0f32);
                let (w_ptr, _w_sync) = data.device_ptr(&self.stream);
                let (x_ptr, _x_sync) = x16.device_ptr(&self.stream);
                let (out_ptr, _out_sync) = out.data.device_ptr_mut(&self.stream);
                // SAFETY: as for sgemm; the pointers stay valid while the sync guards live, and
                // alpha/beta are f32 as CUBLAS_COMPUTE_32F requires.
                unsafe {
                    cudarc::cublas::result::gemm_ex(
                        *self.blas.handle(),
                        cublasOperation_t::CUBLAS_OP_T,
                        cublasOperation_t::CUBLAS_OP_N,
                        m_,
                        n_,
                        k_,
                        (&alpha) as *const f32 as *const _,
                        w_ptr as *const _,
                        cudaDataType_t::CUDA_R_16BF,
                        k_,
                        x_ptr as *const _,
                        cudaDataType_t::CUDA_R_16BF,
                        k_,
                        (&beta) as *const f32 as *const _,
                        out_ptr as *mut _,
                        cudaDataType_t::CUDA_R_32F,
                        m_,
                        cublasComputeType_t::CUBLAS_COMPUTE_32F,
                        cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
                    )
                }
                .map_err(cuda_error("linear (bf16 gemmEx)"))
            }
        }
    }
}
