// RMSNorm of each row, and RMSNorm fused with the residual add that precedes it in a decoder
// layer. CPU twin: src/backend/cpu/kernels.rs `rms_norm` (and `add_assign` for the fused add).
//
// Launch geometry: grid = (rows), block = (256). One block per row; threads stride over the row,
// sum x^2 with a block reduction, then scale. f32 throughout (the CPU accumulates in f64; the
// difference is far below the bf16 tolerance of the tests).
#include "common.cuh"

// out = v / sqrt(mean(v^2) + eps) * weight, where v = x (ADD = false) or v = residual + x, also
// written back to residual (ADD = true).
template <bool ADD>
__device__ void rms_norm_row(float* residual, const float* x, const float* weight, float eps, int dim, float* out) {
    const size_t base = (size_t)blockIdx.x * dim;
    float sum_sq = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        float v = x[base + i];
        if (ADD) {
            v += residual[base + i];
            residual[base + i] = v;
        }
        sum_sq += v * v;
    }
    const float inv = rsqrtf(block_sum(sum_sq) / dim + eps);
    // Each thread re-reads only the elements it wrote itself: no barrier needed.
    const float* src = ADD ? residual : x;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        out[base + i] = src[base + i] * inv * weight[i];
    }
}

// out[rows, dim] = rms_norm(x[rows, dim]) * weight[dim].
extern "C" __global__ void rms_norm(const float* x, const float* weight, float eps, int dim, float* out) {
    rms_norm_row<false>(nullptr, x, weight, eps, dim, out);
}

// residual += x; out = rms_norm(residual) * weight. `out` must not alias `residual` or `x`.
extern "C" __global__ void add_rms_norm(float* residual, const float* x, const float* weight, float eps, int dim, float* out) {
    rms_norm_row<true>(residual, x, weight, eps, dim, out);
}
