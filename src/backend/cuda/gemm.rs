//! `linear` on cuBLAS: `out[rows, n] = x[rows, k] · Wᵀ` for a row-major `[n, k]` weight.
//!
//! cuBLAS is column-major, where row-major `out` is `outᵀ [n, rows]`: `outᵀ = W · xᵀ`, with `W`
//! read as the column-major `[k, n]` matrix transposed (`transa = T`, `lda = k`) and `xᵀ` as the
//! column-major `[k, rows]` matrix (`transb = N`, `ldb = k`). One `cublasGemmEx` for both input
//! types: f32 inputs (f32 math, no TF32) or bf16 inputs, always f32 output and accumulation.

use cudarc::cublas::sys::{cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cudaDataType_t};
use cudarc::cublas::CudaBlas;

use super::cuda_error;
use crate::backend::gpu::{GemmInputs, GemmShape};
use crate::error::{Error, Result};

/// `out = x · wᵀ` (or `out += x · wᵀ` with `accumulate`) on device addresses holding
/// `shape`-sized operands of type `inputs`.
pub(super) fn gemm(blas: &CudaBlas, inputs: GemmInputs, shape: GemmShape, (x, w, out): (u64, u64, u64), accumulate: bool) -> Result<()> {
    let dim = |v: usize| i32::try_from(v).map_err(|_| Error::Backend(format!("cuda linear: dimension {v} exceeds int")));
    let (m, n, k) = (dim(shape.n)?, dim(shape.rows)?, dim(shape.k)?);
    let input_type = match inputs {
        GemmInputs::F32 => cudaDataType_t::CUDA_R_32F,
        GemmInputs::Bf16 => cudaDataType_t::CUDA_R_16BF,
    };
    let (alpha, beta) = (1.0f32, if accumulate { 1.0f32 } else { 0.0 });
    // SAFETY: the caller checked that w holds n*k, x rows*k and out rows*n elements of the given
    // types, matching the dimensions and leading dimensions above; alpha/beta are f32 as
    // CUBLAS_COMPUTE_32F requires and outlive the (stream-ordered) call, which reads them at once.
    unsafe {
        cudarc::cublas::result::gemm_ex(
            *blas.handle(),
            cublasOperation_t::CUBLAS_OP_T,
            cublasOperation_t::CUBLAS_OP_N,
            m,
            n,
            k,
            (&alpha) as *const f32 as *const _,
            w as *const _,
            input_type,
            k,
            x as *const _,
            input_type,
            k,
            (&beta) as *const f32 as *const _,
            out as *mut _,
            cudaDataType_t::CUDA_R_32F,
            m,
            cublasComputeType_t::CUBLAS_COMPUTE_32F,
            cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
        )
    }
    .map_err(cuda_error("linear (cublasGemmEx)"))
}
